"""Detection: observations + catalogs -> finding drafts. No I/O here: sensors do the looking."""
