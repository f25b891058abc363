"""Kafka mode: the Kafka log backend, topics, the faust-streaming worker app and its partition fold, mock-cluster support."""
