#!/bin/sh
# compose.yaml's db, on its first start: let the `replica` profile's standby stream from it
# (the image's pg_hba.conf allows every database but not replication connections).
echo "host replication all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
