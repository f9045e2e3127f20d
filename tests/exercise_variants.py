"""Student submissions for the grader's tests: correct implementations written differently from
the solutions, and the wrong ones students typically write, each with the feedback it must get.

Each code string defines one function in a namespace that already holds
``import math, torch, torch.nn.functional as F, robustlab`` and ``from scipy.stats import beta, norm``
(the exercises' import cell).
"""

PRELUDE = """import math
import torch
import torch.nn.functional as F
from scipy.stats import beta, norm
import robustlab
"""

# item -> correct code, written differently from the solution notebooks.
ALTERNATIVE = {
    "fgsm": '''
def fgsm(model, x, y, eps):
    x = x.clone().detach().requires_grad_(True)
    loss = F.cross_entropy(model(x), y)
    (grad,) = torch.autograd.grad(loss, x)
    return (x + eps * grad.sign()).clamp(0, 1).detach()
''',
    "pgd_linf_step": '''
def pgd_linf_step(x_adv, x, grad, alpha, eps):
    x_new = x_adv + alpha * grad.sign()
    x_new = torch.min(torch.max(x_new, x - eps), x + eps)
    return x_new.clamp(0, 1)
''',
    "pgd_l2_step": '''
def pgd_l2_step(x_adv, x, grad, alpha, eps):
    g_norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    delta = x_adv + alpha * grad / g_norm - x
    d_norm = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    delta = delta * torch.clamp(eps / d_norm, max=1.0)
    return (x + delta).clamp(0, 1)
''',
    "pgd_at_epoch": '''
def pgd_at_epoch(model, batches, optimizer, *, eps, alpha, steps):
    losses = []
    for x, y in batches:
        x_adv = robustlab.pgd(model, x, y, eps=eps, alpha=alpha, steps=steps, random_start=False)
        model.train()
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x_adv), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return sum(losses) / len(losses)
''',
    "evaluate": '''
def evaluate(model, x, y, *, eps, alpha, steps):
    model.eval()
    x_adv = robustlab.pgd(model, x, y, eps=eps, alpha=alpha, steps=steps, random_start=False)
    with torch.no_grad():
        clean = (model(x).argmax(dim=1) == y).float().mean().item()
        robust = (model(x_adv).argmax(dim=1) == y).float().mean().item()
    return clean, robust
''',
    "gradreg_loss": '''
def gradreg_loss(model, x, y, lam):
    x = x.clone().requires_grad_(True)
    losses = F.cross_entropy(model(x), y, reduction="none")
    (grad,) = torch.autograd.grad(losses.sum(), x, create_graph=True)
    penalty = grad.pow(2).flatten(1).sum(dim=1)
    return (losses + lam * penalty).mean()
''',
    "sample_counts": '''
def sample_counts(model, x, *, sigma, n, num_classes, batch_size):
    counts = torch.zeros(num_classes, dtype=torch.long)
    remaining = n
    with torch.no_grad():
        while remaining > 0:
            b = min(batch_size, remaining)
            noisy = x.unsqueeze(0) + sigma * torch.randn(b, *x.shape)
            predictions = model(noisy).argmax(dim=1)
            counts += torch.bincount(predictions, minlength=num_classes)
            remaining -= b
    return counts
''',
    "lower_confidence_bound": '''
def lower_confidence_bound(k, n, alpha):
    if k == 0:
        return 0.0
    return float(beta.ppf(alpha, k, n - k + 1))
''',
    "certify": '''
def certify(model, x, *, sigma, n0, n, alpha, batch_size):
    model.eval()
    k = model(x.unsqueeze(0)).shape[1]
    guess = int(sample_counts(model, x, sigma=sigma, n=n0, num_classes=k, batch_size=batch_size).argmax())
    counts = sample_counts(model, x, sigma=sigma, n=n, num_classes=k, batch_size=batch_size)
    p_lower = lower_confidence_bound(int(counts[guess]), n, alpha)
    if p_lower < 0.5:
        return -1, 0.0
    return guess, sigma * norm.ppf(p_lower)
''',
    "gradient": '''
def gradient(model, x, target):
    x = x.clone().requires_grad_(True)
    logits = model(x)
    selected = logits[torch.arange(len(x)), target]
    (grad,) = torch.autograd.grad(selected.sum(), x)
    return grad
''',
    "smoothgrad": '''
def smoothgrad(model, x, target, *, sigma, samples):
    total = torch.zeros_like(x)
    for _ in range(samples):
        total += gradient(model, x + sigma * torch.randn_like(x), target)
    return total / samples
''',
    "integrated_gradients": '''
def integrated_gradients(model, x, target, *, baseline, steps):
    total = torch.zeros_like(x)
    for i in range(1, steps + 1):
        point = baseline + (i - 0.5) / steps * (x - baseline)
        total += gradient(model, point, target)
    return (x - baseline) * total / steps
''',
    "mask_top": '''
def mask_top(x, attr, fraction, *, keep=False, fill=0.0):
    n, c, h, w = x.shape
    k = round(fraction * h * w)
    scores = attr.abs().sum(dim=1).reshape(n, -1)
    top = torch.zeros_like(scores, dtype=torch.bool)
    idx = scores.argsort(dim=1, descending=True, stable=True)[:, :k]
    top.scatter_(1, idx, True)
    replace = ~top if keep else top
    out = x.clone()
    out[replace.reshape(n, 1, h, w).expand_as(x)] = fill
    return out
''',
}

# (item, what the student did wrong, code, a fragment the feedback must contain)
WRONG = [
    ("fgsm", "wrong sign", '''
def fgsm(model, x, y, eps):
    x = x.clone().requires_grad_(True)
    F.cross_entropy(model(x), y).backward()
    return (x - eps * x.grad.sign()).clamp(0, 1).detach()
''', "goes down the loss"),
    ("fgsm", "no clamp to [0, 1]", '''
def fgsm(model, x, y, eps):
    x = x.clone().requires_grad_(True)
    F.cross_entropy(model(x), y).backward()
    return (x + eps * x.grad.sign()).detach()
''', "clamp to [0, 1]"),
    ("fgsm", "gradient w.r.t. the parameters, not the input", '''
def fgsm(model, x, y, eps):
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    return (x + eps * x.grad.sign()).clamp(0, 1)
''', "raised"),
    ("pgd_linf_step", "no projection", '''
def pgd_linf_step(x_adv, x, grad, alpha, eps):
    return (x_adv + alpha * grad.sign()).clamp(0, 1)
''', "exceeds eps"),
    ("pgd_linf_step", "raw gradient instead of its sign", '''
def pgd_linf_step(x_adv, x, grad, alpha, eps):
    x_new = torch.min(torch.max(x_adv + alpha * grad, x - eps), x + eps)
    return x_new.clamp(0, 1)
''', "raw gradient"),
    ("pgd_l2_step", "step not normalised", '''
def pgd_l2_step(x_adv, x, grad, alpha, eps):
    delta = x_adv + alpha * grad - x
    d_norm = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return (x + delta * torch.clamp(eps / d_norm, max=1.0)).clamp(0, 1)
''', "normalise"),
    ("pgd_l2_step", "no projection", '''
def pgd_l2_step(x_adv, x, grad, alpha, eps):
    g_norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return (x_adv + alpha * grad / g_norm).clamp(0, 1)
''', "L2 norm exceeds"),
    ("pgd_l2_step", "normalised by the whole batch's norm", '''
def pgd_l2_step(x_adv, x, grad, alpha, eps):
    delta = x_adv + alpha * grad / grad.norm() - x
    d_norm = delta.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
    return (x + delta * torch.clamp(eps / d_norm, max=1.0)).clamp(0, 1)
''', "whole batch"),
    ("pgd_at_epoch", "trains on the clean images", '''
def pgd_at_epoch(model, batches, optimizer, *, eps, alpha, steps):
    losses = []
    for x, y in batches:
        model.train()
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return sum(losses) / len(losses)
''', "clean images"),
    ("pgd_at_epoch", "forgets optimizer.zero_grad()", '''
def pgd_at_epoch(model, batches, optimizer, *, eps, alpha, steps):
    losses = []
    for x, y in batches:
        x_adv = robustlab.pgd(model, x, y, eps=eps, alpha=alpha, steps=steps, random_start=False)
        model.train()
        loss = F.cross_entropy(model(x_adv), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return sum(losses) / len(losses)
''', "zero_grad"),
    ("evaluate", "forgets model.eval()", '''
def evaluate(model, x, y, *, eps, alpha, steps):
    x_adv = robustlab.pgd(model, x, y, eps=eps, alpha=alpha, steps=steps, random_start=False)
    with torch.no_grad():
        clean = (model(x).argmax(dim=1) == y).float().mean().item()
        robust = (model(x_adv).argmax(dim=1) == y).float().mean().item()
    return clean, robust
''', "training mode"),
    ("evaluate", "percentages instead of fractions", '''
def evaluate(model, x, y, *, eps, alpha, steps):
    model.eval()
    x_adv = robustlab.pgd(model, x, y, eps=eps, alpha=alpha, steps=steps, random_start=False)
    with torch.no_grad():
        clean = 100 * (model(x).argmax(dim=1) == y).float().mean().item()
        robust = 100 * (model(x_adv).argmax(dim=1) == y).float().mean().item()
    return clean, robust
''', "fractions"),
    ("gradreg_loss", "no create_graph (the penalty is not trained through)", '''
def gradreg_loss(model, x, y, lam):
    x = x.clone().requires_grad_(True)
    losses = F.cross_entropy(model(x), y, reduction="none")
    (grad,) = torch.autograd.grad(losses.sum(), x)
    return (losses + lam * grad.pow(2).flatten(1).sum(dim=1)).mean()
''', "create_graph=True"),
    ("gradreg_loss", "gradient of the mean loss", '''
def gradreg_loss(model, x, y, lam):
    x = x.clone().requires_grad_(True)
    loss = F.cross_entropy(model(x), y)
    (grad,) = torch.autograd.grad(loss, x, create_graph=True)
    return loss + lam * grad.pow(2).flatten(1).sum(dim=1).mean()
''', "1/N^2"),
    ("gradreg_loss", "norm instead of squared norm", '''
def gradreg_loss(model, x, y, lam):
    x = x.clone().requires_grad_(True)
    losses = F.cross_entropy(model(x), y, reduction="none")
    (grad,) = torch.autograd.grad(losses.sum(), x, create_graph=True)
    return (losses + lam * grad.flatten(1).norm(dim=1)).mean()
''', "SQUARE"),
    ("gradreg_loss", "detached loss", '''
def gradreg_loss(model, x, y, lam):
    x = x.clone().requires_grad_(True)
    losses = F.cross_entropy(model(x), y, reduction="none")
    (grad,) = torch.autograd.grad(losses.sum(), x, create_graph=True)
    return (losses + lam * grad.pow(2).flatten(1).sum(dim=1)).mean().detach()
''', "not differentiable"),
    ("sample_counts", "no noise", '''
def sample_counts(model, x, *, sigma, n, num_classes, batch_size):
    counts = torch.zeros(num_classes, dtype=torch.long)
    with torch.no_grad():
        for start in range(0, n, batch_size):
            batch = x.unsqueeze(0).repeat(min(batch_size, n - start), 1, 1, 1)
            counts += torch.bincount(model(batch).argmax(dim=1), minlength=num_classes)
    return counts
''', "did you add the noise"),
    ("sample_counts", "clamps the noisy images to [0, 1]", '''
def sample_counts(model, x, *, sigma, n, num_classes, batch_size):
    counts = torch.zeros(num_classes, dtype=torch.long)
    with torch.no_grad():
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            noisy = (x.unsqueeze(0) + sigma * torch.randn(b, *x.shape)).clamp(0, 1)
            counts += torch.bincount(model(noisy).argmax(dim=1), minlength=num_classes)
    return counts
''', "not clamped"),
    ("lower_confidence_bound", "two-sided interval (alpha / 2)", '''
def lower_confidence_bound(k, n, alpha):
    return 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
''', "alpha/2"),
    ("lower_confidence_bound", "normal approximation", '''
def lower_confidence_bound(k, n, alpha):
    p = k / n
    return p - norm.ppf(1 - alpha) * math.sqrt(p * (1 - p) / n)
''', "normal approximation"),
    ("certify", "estimates p_A from the selection samples", '''
def certify(model, x, *, sigma, n0, n, alpha, batch_size):
    k = model(x.unsqueeze(0)).shape[1]
    counts0 = sample_counts(model, x, sigma=sigma, n=n0, num_classes=k, batch_size=batch_size)
    guess = int(counts0.argmax())
    p_lower = lower_confidence_bound(int(counts0[guess]), n0, alpha)
    if p_lower < 0.5:
        return -1, 0.0
    return guess, sigma * norm.ppf(p_lower)
''', "selection samples"),
    ("certify", "never abstains", '''
def certify(model, x, *, sigma, n0, n, alpha, batch_size):
    k = model(x.unsqueeze(0)).shape[1]
    guess = int(sample_counts(model, x, sigma=sigma, n=n0, num_classes=k, batch_size=batch_size).argmax())
    counts = sample_counts(model, x, sigma=sigma, n=n, num_classes=k, batch_size=batch_size)
    return guess, sigma * norm.ppf(lower_confidence_bound(int(counts[guess]), n, alpha))
''', "must abstain"),
    ("gradient", "gradient of the log-probability", '''
def gradient(model, x, target):
    x = x.clone().requires_grad_(True)
    logp = F.log_softmax(model(x), dim=1)[torch.arange(len(x)), target]
    (grad,) = torch.autograd.grad(logp.sum(), x)
    return grad
''', "log-probability"),
    ("gradient", "absolute value", '''
def gradient(model, x, target):
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x)[torch.arange(len(x)), target].sum(), x)
    return grad.abs()
''', "|gradient|"),
    ("smoothgrad", "no noise", '''
def smoothgrad(model, x, target, *, sigma, samples):
    return sum(gradient(model, x, target) for _ in range(samples)) / samples
''', "plain gradient"),
    ("smoothgrad", "sums instead of averaging", '''
def smoothgrad(model, x, target, *, sigma, samples):
    return sum(gradient(model, x + sigma * torch.randn_like(x), target) for _ in range(samples))
''', "too large"),
    ("integrated_gradients", "forgets (x - baseline)", '''
def integrated_gradients(model, x, target, *, baseline, steps):
    total = torch.zeros_like(x)
    for i in range(1, steps + 1):
        total += gradient(model, baseline + (i - 0.5) / steps * (x - baseline), target)
    return total / steps
''', "multiply"),
    ("integrated_gradients", "gradient at x only", '''
def integrated_gradients(model, x, target, *, baseline, steps):
    return gradient(model, x, target) * (x - baseline)
''', "gradient at x only"),
    ("mask_top", "removes the least important pixels", '''
def mask_top(x, attr, fraction, *, keep=False, fill=0.0):
    n, c, h, w = x.shape
    k = round(fraction * h * w)
    scores = attr.abs().sum(dim=1).reshape(n, -1)
    top = torch.zeros_like(scores, dtype=torch.bool)
    top.scatter_(1, scores.argsort(dim=1)[:, :k], True)
    replace = ~top if keep else top
    out = x.clone()
    out[replace.reshape(n, 1, h, w).expand_as(x)] = fill
    return out
''', "LEAST"),
    ("mask_top", "ranks over the whole batch, not per image", '''
def mask_top(x, attr, fraction, *, keep=False, fill=0.0):
    n, c, h, w = x.shape
    k = round(fraction * h * w) * n
    scores = attr.abs().sum(dim=1).reshape(-1)
    top = torch.zeros_like(scores, dtype=torch.bool)
    top[scores.argsort(descending=True)[:k]] = True
    top = top.reshape(n, 1, h, w)
    replace = ~top if keep else top
    return torch.where(replace.expand_as(x), torch.full_like(x, fill), x)
''', "in EVERY image"),
    ("mask_top", "int() instead of round()", '''
def mask_top(x, attr, fraction, *, keep=False, fill=0.0):
    n, c, h, w = x.shape
    k = int(fraction * h * w)
    scores = attr.abs().sum(dim=1).reshape(n, -1)
    top = torch.zeros_like(scores, dtype=torch.bool)
    top.scatter_(1, scores.argsort(dim=1, descending=True, stable=True)[:, :k], True)
    replace = ~top if keep else top
    return torch.where(replace.reshape(n, 1, h, w).expand_as(x), torch.full_like(x, fill), x)
''', "round(fraction * H * W)"),
    ("mask_top", "ranks by the signed attribution", '''
def mask_top(x, attr, fraction, *, keep=False, fill=0.0):
    n, c, h, w = x.shape
    k = round(fraction * h * w)
    scores = attr.sum(dim=1).reshape(n, -1)
    top = torch.zeros_like(scores, dtype=torch.bool)
    top.scatter_(1, scores.argsort(dim=1, descending=True, stable=True)[:, :k], True)
    replace = ~top if keep else top
    return torch.where(replace.reshape(n, 1, h, w).expand_as(x), torch.full_like(x, fill), x)
''', "signed"),
]

# Ways of handing in the reference instead of one's own code: each must score 0 on its item.
DELEGATING = [
    ("direct call", "fgsm", '''
def fgsm(model, x, y, eps):
    return robustlab.fgsm(model, x, y, eps=eps)
'''),
    ("alias", "fgsm", '''
fgsm = robustlab.attacks.fgsm
'''),
    ("wrapper around a helper", "pgd_l2_step", '''
_helper = robustlab.attacks._step
def pgd_l2_step(x_adv, x, grad, alpha, eps):
    return _helper(x, x_adv, grad.clone(), alpha, eps, "l2", None)
'''),
    ("import inside the function", "lower_confidence_bound", '''
def lower_confidence_bound(k, n, alpha):
    from robustlab.smoothing import lower_confidence_bound as lcb
    return lcb(k, n, alpha=alpha)
'''),
    ("dynamic import", "mask_top", '''
def mask_top(x, attr, fraction, *, keep=False, fill=0.0):
    import importlib
    module = importlib.import_module("robustlab." + "interpret")
    return getattr(module, "mask_top")(x, attr, fraction, keep=keep, fill=fill)
'''),
    ("peer library", "integrated_gradients", '''
def integrated_gradients(model, x, target, *, baseline, steps):
    from captum.attr import IntegratedGradients
    return IntegratedGradients(model).attribute(x, baselines=baseline, target=target, n_steps=steps)
'''),
    ("switches the monitor off", "gradient", '''
def gradient(model, x, target):
    import sys
    sys.setprofile(None)
    return robustlab.saliency.gradient(model, x, target)
'''),
    ("training loop of the library", "pgd_at_epoch", '''
def pgd_at_epoch(model, batches, optimizer, *, eps, alpha, steps):
    cfg = robustlab.train.TrainConfig(method="pgd", eps=eps, alpha=alpha, steps=steps)
    losses = []
    for x, y in batches:
        optimizer.zero_grad()
        loss, _ = robustlab.train.training_loss(model, x, y, cfg)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return sum(losses) / len(losses)
'''),
]
