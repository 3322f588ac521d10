"""metrics-shipper (flow 7): every worker's metrics and logs to CloudWatch."""
