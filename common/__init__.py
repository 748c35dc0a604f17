"""Pure helpers both layers need, owned by neither: ``proxy/`` (the front end) and
``directory/`` (LDAP, caches, provisioning) import from here, and nothing here imports them.

* :mod:`common.configschema`: how a ``proxy.toml`` table is read and checked, so each layer
  can declare and own its own sections;
* :mod:`common.imapformat`: IMAP quoting, literals, LOGIN and CAPABILITY parsing, which the
  proxy's backend logins and the admin tool's IMAP client both speak.
"""
