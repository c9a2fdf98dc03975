"""One reader per dataset format; each has load(root, split=None, on_error="raise", **kw)."""
