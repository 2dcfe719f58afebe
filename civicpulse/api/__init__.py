"""The HTTP surface: one module per resource. Only this package knows about HTTP."""
