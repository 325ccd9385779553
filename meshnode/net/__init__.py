"""OS glue: TUN devices, UDP sockets and netlink, kept thin around the core."""
