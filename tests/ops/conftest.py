"""The ops commands run against the session operator (tests.operator_fixtures)."""
