"""Streaming sentiment consumer: Kafka in, labelled topic, Redis counters, alerts."""
