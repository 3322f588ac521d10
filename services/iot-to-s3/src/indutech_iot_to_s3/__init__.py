"""iot-to-s3: flow 2 of InduTech Flows, Redpanda ``iot.*`` topics to the S3 lake as Parquet."""
