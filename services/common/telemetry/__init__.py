"""What the services tell operators about themselves: Prometheus metrics (metrics.py), OpenTelemetry traces
(tracing.py), and the one server interceptor that feeds both for every RPC (rpc.py)."""
