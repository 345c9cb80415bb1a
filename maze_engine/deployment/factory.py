"""DeploymentFactory: many AgentDeployments (one per episode) from one env template and one shared policy."""

import copy
from typing import Any

from maze_engine.core.env.structured_env import StructuredEnv
from maze_engine.core.errors import ConfigError
from maze_engine.deployment.agent_deployment import AgentDeployment
from maze_engine.deployment.external_core_env import ExternalCoreEnv
from maze_engine.deployment.inputs import compile_state_check
from maze_engine.deployment.stack import (
    ConfigLike,
    ConfiguredWrapper,
    WrapperLayer,
    WrappersLike,
    attach_external_core,
    build_env,
    build_policy,
    clone_stack,
    shared_objects,
    wrapper_layers,
)


class DeploymentFactory:
    """Builds the env, its wrappers and the policy once; ``create`` stamps out fresh deployments cheaply.

    Each created deployment has its own wrapper stack (its own statistics and wrapper state) over its own
    ExternalCoreEnv, while the policy, the spaces, the conversions and the template's gymnasium env are
    shared, so no gymnasium env is built per deployment. Arguments are as for AgentDeployment.

    >>> factory = DeploymentFactory({"_target_": "maze_engine.RandomPolicy"},
    ...                             {"_target_": "maze_engine.make_gym_maze_env", "name": "CartPole-v1"},
    ...                             wrappers={"maze_engine.LogStatsWrapper": {}})
    >>> first, second = factory.create(), factory.create()
    >>> first.env is not second.env and first.policy is second.policy
    True
    """

    def __init__(self, policy: ConfigLike, env: ConfigLike, wrappers: WrappersLike = None) -> None:
        self._env_part = build_env(env)
        self._layers: list[tuple[WrapperLayer, StructuredEnv]] = []
        stack = self._env_part
        for layer in wrapper_layers(wrappers):
            stack = layer.build(stack)
            self._layers.append((layer, stack))
        self.policy: Any = build_policy(policy, stack)
        self._template_core = attach_external_core(stack)
        self.template_env = stack
        self._state_check = compile_state_check(self._template_core.maze_state_space)
        self._shared = shared_objects(stack)
        try:  # fail here, not on the first episode, if a layer given as an instance cannot be copied
            self.create()
        except (TypeError, copy.Error, AttributeError) as err:
            reason = f"{type(err).__name__}: {err}"
            raise ConfigError("env/wrappers: a layer given as an instance cannot be copied for each "
                              f"deployment ({reason}); give it as a config instead") from err

    @property
    def observation_spaces_dict(self) -> Any:
        """The policy's observation spaces (those of the top of the wrapper stack)."""
        return self.template_env.observation_spaces_dict

    @property
    def action_spaces_dict(self) -> Any:
        """The policy's action spaces (those of the top of the wrapper stack)."""
        return self.template_env.action_spaces_dict

    def create(self) -> AgentDeployment:
        """A fresh deployment: a new stack over a new ExternalCoreEnv, sharing the policy."""
        core = ExternalCoreEnv(self._template_core.maze_state_space)
        env = clone_stack(self._env_part, {id(self._template_core): core}, self._shared)
        template_inner: StructuredEnv = self._env_part
        for layer, template_layer in self._layers:
            if isinstance(layer, ConfiguredWrapper):
                # Configured wrappers are rebuilt, so each gets exactly what its constructor sets up.
                env = layer.build(env)
            else:
                env = clone_stack(template_layer, {id(template_inner): env}, self._shared)
            template_inner = template_layer
        return AgentDeployment.assemble(self.policy, env, core, self._state_check, owns_policy=False)
