"""Simulated production traffic: environments driving a real policy server, with delayed feedback."""
