"""The round protocol as Durable orchestrations: deterministic, references and metrics only."""
