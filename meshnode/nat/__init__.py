"""NAT traversal helpers: a sans-IO STUN codec and a sans-IO NAT behaviour analyser."""
