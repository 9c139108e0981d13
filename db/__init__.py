"""The PostgreSQL ticket store: models, sessions and the domain operations on them."""
