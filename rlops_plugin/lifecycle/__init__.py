"""The use cases every edge calls: one function per lifecycle step, each doing its change and its audit event."""
