"""Connectors: the outside world (files, Kafka, Alertmanager, Grafana, notifications)."""
