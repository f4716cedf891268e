"""Durable state behind one narrow protocol; SQLAlchemy implements it for SQLite and Postgres."""
