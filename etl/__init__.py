"""desksync: mirror customer-service platforms into a relational database and back."""

__version__ = "0.1.0"
