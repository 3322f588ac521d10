"""iot-aggregator: flow 3, the iot.* topics to windowed aggregates in the warehouse."""
