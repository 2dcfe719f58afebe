"""A migration that has landed never changes: a database that applied it refuses to migrate
when the file's text differs (civicpulse.db.migrate compares checksums), so even a comment
edit would stop every deployed service at its next start. Change the schema with a new
numbered file, and pin its checksum here when it lands."""

from __future__ import annotations

from civicpulse.db.migrate import load, schema_dir

LANDED = {
    1: "31393300233df74c73c57e1366dd5e3cf45167105f233fe46535daeca6deec2f",
    2: "1aa04f92c227428851461e28f1ca15e277934cd61015d7d93c2982e4907391f1",
    3: "be323992da05370e7439acf1673d4bdc84ac4d5d95cf5571ee5a4606a4facc0a",
    4: "c2f0309f3e38d1d3450fca1b6230b903fc2706898bd4ad5dd1c39c19865760b7",
    5: "bd1b7bab5157e7c321078eac300dd7df6d8c4066f36a1aada02b03e06750473f",
    6: "ab87587a9b18ee53662c65221d2f45423a026b8eb3de6de6da9e8893873f0c33",
    7: "09519c601efe66a8c919e6fcebdbdf8c9d907c208b0dfe8f5324a922c1dcadd4",
    8: "6461f82cbbbc49aedc49021954e3c8384c38b8fc61aaddee3e3f5e8a45c03a4b",
    9: "0308eb83a7c92a4299c749557a42ed45955a416652ee5b1982bdafa75011767d",
    10: "4b0a2dc5eef6afec93688fdd9f3a6fd8e54474f13d6368193381d53ffc731b7b",
    11: "81a3c8b0d80e0732cbff292c67c7d2dbe5eab135236ca033d2531d17d4f23d5d",
    12: "8de9bc7bd00a6fc5dd463e9ff639c33b5c479eba41a129087ab4e10c26eed8e3",
    13: "26069e7d2e1beabf212c0d442a37fcd45c7f2142f40bd25232f88996caf4f96b",
    14: "7bce4c29a30392146ea9c7f6628496f87924561a82e38e843de1c7311abeb596",
    15: "0fa28fa728ba32a01e7c717a41bce91f77c2d824271e21edd5913ea53d32a071",
    16: "ba68c389656b9fc4411a085469c1fc6d3d5963149e06b37ceb4ee85b0b06ce5e",
}


def test_landed_migrations_keep_their_text() -> None:
    migrations = {m.version: m for m in load(schema_dir())}
    changed = [
        f"{v:04d}_{migrations[v].name}.sql"
        for v, checksum in LANDED.items()
        if v in migrations and migrations[v].checksum != checksum
    ]
    assert not changed, f"landed migrations edited (write a new one instead): {changed}"
    assert LANDED.keys() <= migrations.keys(), "a landed migration is gone"
    assert sorted(migrations) == list(range(1, len(migrations) + 1))
