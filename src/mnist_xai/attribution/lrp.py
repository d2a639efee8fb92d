"""Layer-wise relevance propagation (Bach et al. 2015; the rules as Montavon et al. 2019 recommend combining them).

Zennit is the implementation, not only the oracle: its rules (and the generalised gamma rule for negative inputs),
stabilisers, composites and canonizers are what the LRP literature's own tools use, and a second copy of them here
would only be a second place for them to go wrong. What this module adds is what Zennit needs to be told about these
networks:

- the composite: a single rule for every conv and linear layer (epsilon, gamma, alpha1-beta0, as Captum's LRP
  applies one rule everywhere), or a recommended composite (EpsilonPlusFlat, EpsilonGammaBox, whose box is the
  range of the model's input, black to white after normalisation);
- canonizers for the ResNet: each BatchNorm merged into the convolution before it, and each residual addition made
  a `Sum` module, so that relevance is split between the block and its shortcut in proportion to what each
  contributed (the Norm rule) rather than copied to both (the gradient of an addition);
- ReLUs pass relevance on unchanged and max-pools route it to their largest input (Zennit's defaults), so LRP reads
  the activations between a ReLU and its max-pool: it runs on the network as trained (commutes=False).

The relevance put on the output is the explained score (the target's logit, or its softmax probability) at the
target's logit, as Bach et al. and Captum start it: each map sums to about the score, less what the biases absorb.
"""

from __future__ import annotations

import torch

from mnist_xai.attribution.core import image_chunks, reduce_channels, target_scores


def _input_box() -> tuple[float, float]:
    """The lowest and highest value a pixel of the model's input can take: black and white, normalised."""
    from mnist_xai.data import BLACK, MEAN, STD

    return BLACK, float((1.0 - MEAN) / STD)


def composite_for(name: str, *, epsilon: float, gamma: float, canonizers: list):
    from zennit import composites, rules, types

    if name == "epsilon_plus_flat":
        return composites.EpsilonPlusFlat(epsilon=epsilon, canonizers=canonizers)
    if name == "epsilon_gamma_box":
        low, high = _input_box()
        return composites.EpsilonGammaBox(low=low, high=high, epsilon=epsilon, gamma=gamma, canonizers=canonizers)
    rule = {"epsilon": lambda: rules.Epsilon(epsilon=epsilon), "gamma": lambda: rules.Gamma(gamma=gamma),
            "alpha1_beta0": lambda: rules.AlphaBeta(alpha=1.0, beta=0.0)}[name]()
    return composites.LayerMapComposite(layer_map=[*composites.layer_map_base(), (types.Linear, rule)],
                                        canonizers=canonizers)


def canonizers_for(model: torch.nn.Module) -> list:
    """What the ResNet needs (BatchNorm merged, residual sums as modules); nothing for the CNN."""
    from zennit.canonizers import AttributeCanonizer, NamedMergeBatchNorm
    from zennit.layer import Sum

    from mnist_xai.model import ResidualBlock

    modules = dict(model.named_modules())
    pairs = []
    for name, module in modules.items():
        if isinstance(module, torch.nn.BatchNorm2d):
            parent, _, own = name.rpartition(".")
            conv = {"bn": "conv", "bn1": "conv1", "bn2": "conv2"}.get(own)
            conv_name = f"{parent}.{conv}" if parent else conv
            if conv is None or not isinstance(modules.get(conv_name), torch.nn.Conv2d):
                raise ValueError(f"LRP cannot merge BatchNorm {name}: no convolution before it")
            pairs.append(([conv_name], name))
    if not pairs:
        return []

    def block_forward(self, x):
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return self.out_relu(self.canonizer_sum(torch.stack([shortcut, out], dim=-1)))

    def residual_sums(_name, module):
        if isinstance(module, ResidualBlock):
            return {"forward": block_forward.__get__(module), "canonizer_sum": Sum()}
        return None

    return [NamedMergeBatchNorm(pairs), AttributeCanonizer(residual_sums)]


def lrp(model, x, targets, *, composite, epsilon=1e-6, gamma=0.25, score, batch_size):
    """LRP maps with Zennit's rules: the relevance of the explained score, propagated to the input (signed)."""
    maps = torch.empty(x.shape[0], *x.shape[2:], device=x.device)
    rules = composite_for(composite, epsilon=epsilon, gamma=gamma, canonizers=canonizers_for(model))
    for rows in image_chunks(len(x), batch_size):
        images = x[rows].detach().requires_grad_(True)
        with rules.context(model) as modified, torch.enable_grad():
            outputs = modified(images)
            # the relevance put on the output: the explained score itself, on the target's logit (Captum's and
            # Bach et al.'s start), so that the map sums to about the score
            start = torch.zeros_like(outputs).scatter_(1, targets[rows, None],
                                                       target_scores(outputs.detach(), targets[rows], score)[:, None])
            (relevance,) = torch.autograd.grad(outputs, images, grad_outputs=start)
        maps[rows] = reduce_channels(relevance)
    return maps


# One registry entry per composite, so that the report judges each side by side.

def lrp_epsilon(model, x, targets, *, epsilon, score, batch_size):
    return lrp(model, x, targets, composite="epsilon", epsilon=epsilon, score=score, batch_size=batch_size)


def lrp_gamma(model, x, targets, *, gamma, score, batch_size):
    return lrp(model, x, targets, composite="gamma", gamma=gamma, score=score, batch_size=batch_size)


def lrp_alpha1_beta0(model, x, targets, *, score, batch_size):
    return lrp(model, x, targets, composite="alpha1_beta0", score=score, batch_size=batch_size)


def lrp_epsilon_plus_flat(model, x, targets, *, epsilon, score, batch_size):
    return lrp(model, x, targets, composite="epsilon_plus_flat", epsilon=epsilon, score=score, batch_size=batch_size)


def lrp_epsilon_gamma_box(model, x, targets, *, epsilon, gamma, score, batch_size):
    return lrp(model, x, targets, composite="epsilon_gamma_box", epsilon=epsilon, gamma=gamma, score=score,
               batch_size=batch_size)
