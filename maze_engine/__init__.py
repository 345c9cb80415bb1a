"""maze_engine: environments, wrappers, deployment, rollouts and training for reinforcement learning.

Every public class is importable from here (``from maze_engine import AgentDeployment, GymMazeEnv``). Imports
are lazy, so ``import maze_engine`` stays cheap and torch loads only when a torch component is used.
"""

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    # core
    "ActorID": "maze_engine.core.actor_id",
    "EventRecord": "maze_engine.core.events",
    "MazeError": "maze_engine.core.errors",
    "ConfigError": "maze_engine.core.errors",
    "SpaceMismatchError": "maze_engine.core.errors",
    "instantiate": "maze_engine.core.factory",
    "CoreEnv": "maze_engine.core.env.core_env",
    "StructuredEnv": "maze_engine.core.env.structured_env",
    "MazeEnv": "maze_engine.core.env.maze_env",
    "ObservationConversionInterface": "maze_engine.core.env.conversion",
    "ActionConversionInterface": "maze_engine.core.env.conversion",
    "GymMazeEnv": "maze_engine.core.env.gym_env",
    "GymCoreEnv": "maze_engine.core.env.gym_env",
    "make_gym_maze_env": "maze_engine.core.env.gym_env",
    "RunningStats": "maze_engine.core.stats.running",
    "StatsWriter": "maze_engine.core.stats.writers",
    "ConsoleStatsWriter": "maze_engine.core.stats.writers",
    "TSVStatsWriter": "maze_engine.core.stats.writers",
    "register_stats_writer": "maze_engine.core.stats.writers",
    "stats_writers": "maze_engine.core.stats.writers",
    # wrappers
    "Wrapper": "maze_engine.wrappers.wrapper",
    "ObservationWrapper": "maze_engine.wrappers.wrapper",
    "ActionWrapper": "maze_engine.wrappers.wrapper",
    "RewardWrapper": "maze_engine.wrappers.wrapper",
    "LogStatsWrapper": "maze_engine.wrappers.logging.log_stats",
    "EpisodeStats": "maze_engine.wrappers.logging.log_stats",
    "EventLogWrapper": "maze_engine.wrappers.logging.event_log",
    "TimeLimitWrapper": "maze_engine.wrappers.time_limit",
    "ObservationStackWrapper": "maze_engine.wrappers.observation.stack",
    "ObservationNormalizationWrapper": "maze_engine.wrappers.observation.normalization",
    "TrajectoryRecordingWrapper": "maze_engine.wrappers.recording.trajectory",
    "MinariRecordingWrapper": "maze_engine.wrappers.recording.minari",
    # policies
    "StructuredPolicy": "maze_engine.policies.policy",
    "RandomPolicy": "maze_engine.policies.random_policy",
    "TorchPolicy": "maze_engine.policies.torch_policy",
    "load_torch_policy": "maze_engine.policies.torch_io",
    "save_torch_policy": "maze_engine.policies.torch_io",
    # deployment
    "AgentDeployment": "maze_engine.deployment.agent_deployment",
    "ExternalCoreEnv": "maze_engine.deployment.external_core_env",
    "PolicyRequest": "maze_engine.deployment.agent_deployment",
    "EpisodeAbortedError": "maze_engine.deployment.agent_deployment",
    "DeploymentFactory": "maze_engine.deployment.factory",
    "act_batch": "maze_engine.deployment.batch",
    "StepInput": "maze_engine.deployment.batch",
    # rollouts
    "RolloutRunner": "maze_engine.rollout.runner",
    "SequentialRolloutRunner": "maze_engine.rollout.sequential",
    "ParallelRolloutRunner": "maze_engine.rollout.parallel",
    # records
    "read_trajectories": "maze_engine.records.trajectory",
    "Trajectory": "maze_engine.records.trajectory",
    "read_event_logs": "maze_engine.records.event_log",
    # perception
    "DistributionMapper": "maze_engine.perception.distributions.mapper",
    "ProbabilityDistribution": "maze_engine.perception.distributions.base",
    "CategoricalProbabilityDistribution": "maze_engine.perception.distributions.categorical",
    "DiagonalGaussianProbabilityDistribution": "maze_engine.perception.distributions.gaussian",
    "SquashedGaussianProbabilityDistribution": "maze_engine.perception.distributions.gaussian",
    "BernoulliProbabilityDistribution": "maze_engine.perception.distributions.bernoulli",
    "MultiCategoricalProbabilityDistribution": "maze_engine.perception.distributions.multi_categorical",
    "DictProbabilityDistribution": "maze_engine.perception.distributions.dict_distribution",
    "TorchModelBlock": "maze_engine.perception.blocks.torch_model_block",
    "FlattenConcatPolicyNet": "maze_engine.perception.nets.flatten_concat",
    "FlattenConcatStateValueNet": "maze_engine.perception.nets.flatten_concat",
    "ProbabilisticPolicyComposer": "maze_engine.perception.composers.policy",
    "SharedStateCriticComposer": "maze_engine.perception.composers.critic",
    "StateCriticComposer": "maze_engine.perception.composers.critic",
    "TorchStateCritic": "maze_engine.perception.critic",
    "build_model_composers": "maze_engine.perception.composers.model",
    # training
    "A2CAlgorithmConfig": "maze_engine.training.a2c",
    "PPOAlgorithmConfig": "maze_engine.training.ppo",
    "A2C": "maze_engine.training.a2c",
    "PPO": "maze_engine.training.ppo",
    "RolloutEvaluator": "maze_engine.training.evaluator",
    "BCAlgorithmConfig": "maze_engine.training.bc",
    "BehaviouralCloning": "maze_engine.training.bc",
    # high-level API
    "RunContext": "maze_engine.api.run_context",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'maze_engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
