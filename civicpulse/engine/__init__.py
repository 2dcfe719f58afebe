"""Pure functions, no I/O: what the process pool runs. Imports only domain and stdlib."""
