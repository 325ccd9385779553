"""The mesh layer: invites, signed membership, and (later) coordination.

The modules here are sans-IO like `meshnode.wireguard`: no sockets, no trio,
no clock reads (`now` is always an argument), no logging. Every decoder takes
untrusted bytes and raises only its own module's `ValueError` subclass.
"""
