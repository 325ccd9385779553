"""The cross-platform userspace API (UAPI) that wg(8) speaks to a daemon."""
