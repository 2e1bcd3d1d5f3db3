"""Loss gradients and the inverse Fisher around them: sampler, memory planner, distribution."""
