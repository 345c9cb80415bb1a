"""Broker-free: episode id -> AgentDeployment, sequence rules, batching, eviction and hand-off records."""
