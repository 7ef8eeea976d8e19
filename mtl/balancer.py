"""Loss balancers by their public names (`mtl.balancer.UncertaintyWeighting`, ...)."""
from mtl.trainers.balancing import DynamicWeightAverage, LossBalancer, PCGrad, UncertaintyWeighting

__all__ = ["LossBalancer", "UncertaintyWeighting", "DynamicWeightAverage", "PCGrad"]
