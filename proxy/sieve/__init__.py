"""ManageSieve (RFC 5804) through the front door: a parser and dialogue of its own on the
shared session core."""
