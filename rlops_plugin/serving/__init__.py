"""Serving: the KServe policy predictor with exploration, guards, shadow/canary and durable logging."""
