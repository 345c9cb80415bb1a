"""Off-policy evaluation: a candidate policy's expected return estimated from episodes another policy logged.

``data`` holds the logged episodes (``LoggedEpisodes``), ``sources`` reads them from Minari datasets,
``candidate`` turns a policy into the log-probabilities the estimators need, ``weights`` computes and checks
importance weights, ``fqe`` fits the Q-function of the doubly robust estimator, and ``ope`` makes the
estimates with their bootstrap intervals (docs/evaluation.md):

    from maze_engine.evaluation import evaluate_off_policy, logged_episodes_from_minari

    data = logged_episodes_from_minari("cartpole/line7-v0")
    result = evaluate_off_policy(data, policy, gamma=1.0)
    print(result.estimates["wis"].value, result.estimates["dr"].low, result.estimates["dr"].ess)
"""

from maze_engine.evaluation.candidate import Candidate, TorchCandidate, UniformCandidate, candidate_of
from maze_engine.evaluation.data import LoggedDataError, LoggedEpisodes, OffPolicyEvaluationError
from maze_engine.evaluation.fqe import FQEConfig, QEstimates, fit_q_function
from maze_engine.evaluation.ope import Estimate, OffPolicyEvaluation, evaluate_off_policy
from maze_engine.evaluation.sources import logged_episodes_from_minari
from maze_engine.evaluation.weights import MissingPropensitiesError, UnsupportedActionsError

__all__ = ["Candidate", "Estimate", "FQEConfig", "LoggedDataError", "LoggedEpisodes",
           "MissingPropensitiesError", "OffPolicyEvaluation", "OffPolicyEvaluationError", "QEstimates",
           "TorchCandidate", "UniformCandidate", "UnsupportedActionsError", "candidate_of",
           "evaluate_off_policy", "fit_q_function", "logged_episodes_from_minari"]
