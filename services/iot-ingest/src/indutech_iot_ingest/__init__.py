"""iot-ingest (flow 1): SAN files → ``iot.*`` topics, exactly-once.

Files are tailed (indutech_common.tailing), each line validated against its
schema and sent, together with the file checkpoints, in one Kafka transaction.
"""
