"""Wire types and internal records (msgspec Structs). Imports nothing from the package."""
