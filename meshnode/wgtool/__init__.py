"""wg(8)'s configuration commands (show, showconf, set, setconf, addconf,
syncconf) for any userspace WireGuard, over the cross-platform UAPI socket.

Layout, one concern per module:

| module | concern |
| --- | --- |
| `errors.py` | `WgError`: a failure worded exactly as wg words it |
| `console.py` | writing to stdout/stderr byte-exactly, wg's colour rules |
| `model.py` | dataclasses: a device as read, an update to send; addresses and endpoints |
| `values.py` | parsing one value (port, key, key file, endpoint, allowed IPs...) as wg |
| `config.py` | wg's INI configuration files and `set`'s arguments, into an update |
| `sync.py` | syncconf: the smallest update that reaches the file's state |
| `discovery.py` | the socket directory, listing interfaces, what wg says for a missing one |
| `uapi_client.py` | the UAPI protocol: get into a `Device`, an update into a set request |
| `show.py` | output formats: pretty, dump, single fields, showconf, JSON |
| `commands.py` | argument handling of each subcommand, registered in `meshnode.cli` |
"""
