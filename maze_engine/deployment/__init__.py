"""AgentDeployment: a policy plus its wrapper stack, driven by an external env that calls ``act``."""
