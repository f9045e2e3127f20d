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
    # The maximiser of the linearised loss over the eps-box within [0, 1], coordinate by coordinate.
    x_in = x.clone().detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x_in), y, reduction="sum"), x_in)
    up = torch.minimum(x + eps, torch.ones_like(x))
    down = torch.maximum(x - eps, torch.zeros_like(x))
    return torch.where(grad > 0, up, torch.where(grad < 0, down, x)).detach()
''',
    "pgd_linf_step": '''
def pgd_linf_step(x_adv, x, grad, alpha, eps):
    x_new = x_adv + alpha * grad.sign()
    x_new = torch.min(torch.max(x_new, x - eps), x + eps)
    return x_new.clamp(0, 1)
''',
    "pgd_l2_step": '''
def pgd_l2_step(x_adv, x, grad, alpha, eps):
    # One example at a time, with Python floats for the norms.
    out = torch.empty_like(x)
    for i in range(x.shape[0]):
        g_len = math.sqrt(float((grad[i] * grad[i]).sum()))
        delta = x_adv[i] + alpha * grad[i] / max(g_len, 1e-12) - x[i]
        d_len = math.sqrt(float((delta * delta).sum()))
        if d_len > eps:
            delta = delta * (eps / d_len)
        out[i] = (x[i] + delta).clamp(0, 1)
    return out
''',
    "pgd_attack": '''
def pgd_attack(model, x, y, *, eps, alpha, steps, restarts, norm="linf"):
    # Every restart at once (the batch repeated), then the best run picked per example.
    n, xs, ys = len(x), x.repeat(restarts, 1, 1, 1), y.repeat(restarts)
    if norm == "linf":
        adv = xs + eps * (2 * torch.rand_like(xs) - 1)
    else:
        d = torch.randn_like(xs)
        r = eps * torch.rand(len(xs)) ** (1.0 / xs[0].numel())
        adv = xs + d * (r / d.flatten(1).norm(dim=1)).view(-1, 1, 1, 1)
    adv = adv.clamp(0, 1)
    for _ in range(steps):
        adv = adv.detach().requires_grad_(True)
        grad = torch.autograd.grad(F.cross_entropy(model(adv), ys, reduction="sum"), adv)[0]
        adv = (pgd_linf_step if norm == "linf" else pgd_l2_step)(adv.detach(), xs, grad, alpha, eps)
    with torch.no_grad():
        losses = F.cross_entropy(model(adv), ys, reduction="none").view(restarts, n)
    return adv.detach().view(restarts, n, *x.shape[1:])[losses.argmax(0), torch.arange(n)]
''',
    "pgd_at_epoch": '''
def pgd_at_epoch(model, batches, optimizer, *, eps, alpha, steps):
    # robustlab.pgd leaves the model's mode as it found it, so one model.train() is enough; the
    # cross-entropy as NLL of the log-softmax; the mean loss as a running mean.
    model.train()
    mean_loss = 0.0
    for i, (x, y) in enumerate(batches):
        x_adv = robustlab.pgd(model, x, y, eps=eps, alpha=alpha, steps=steps, random_start=False)
        optimizer.zero_grad()
        loss = F.nll_loss(F.log_softmax(model(x_adv), dim=1), y)
        loss.backward()
        optimizer.step()
        mean_loss += (loss.item() - mean_loss) / (i + 1)
    return mean_loss
''',
    "fgsm_rs_epoch": '''
def fgsm_rs_epoch(model, batches, optimizer, *, eps, alpha, random_start):
    # Wong et al.'s form: the start is clipped so that x + delta stays in [0, 1].
    model.train()
    losses = []
    for x, y in batches:
        delta = torch.zeros_like(x)
        if random_start:
            delta.uniform_(-eps, eps)
        delta = torch.max(torch.min(delta, 1 - x), -x).requires_grad_(True)
        out = model(x + delta)
        F.cross_entropy(out, y).backward()
        step = alpha * delta.grad.detach().sign()
        delta = torch.clamp(delta.detach() + step, -eps, eps)
        delta = torch.max(torch.min(delta, 1 - x), -x)
        model.zero_grad()
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x + delta), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return torch.stack(losses).mean()
''',
    "trades_loss": '''
def trades_loss(model, x, x_adv, y, beta):
    log_p = torch.log_softmax(model(x), dim=1)
    log_q = torch.log_softmax(model(x_adv), dim=1)
    ce = -log_p.gather(1, y[:, None]).mean()
    kl = (log_p.exp() * (log_p - log_q)).sum(dim=1).mean()
    return ce + beta * kl
''',
    "dlr_loss": '''
def dlr_loss(logits, y):
    # One example at a time, with Python lists.
    out = []
    for row, label in zip(logits, y.tolist()):
        values = sorted(row.tolist(), reverse=True)
        best_other = max(v for j, v in enumerate(row.tolist()) if j != label)
        out.append(-(row[label] - best_other) / (values[0] - values[2] + 1e-12))
    return torch.stack([torch.as_tensor(v) for v in out])
''',
    "halve_step_size": '''
def halve_step_size(increases, interval, eta, eta_at_last, best, best_at_last, rho=0.75):
    keep = (increases >= rho * interval) & ((eta != eta_at_last) | (best > best_at_last))
    return ~keep
''',
    "linear_impute": '''
def linear_impute(x, removed):
    # Gauss-Seidel-like sweeps (Jacobi, vectorised) until the removed pixels stop changing.
    n, c, h, w = x.shape
    kernel = torch.tensor([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0.0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]], dtype=torch.float64)
    kernel = kernel.view(1, 1, 3, 3)
    ones = torch.ones(1, 1, h, w, dtype=torch.float64)
    norm = F.conv2d(ones, kernel, padding=1)
    hole = removed.expand(n, c, h, w)
    out = x.double().clone()
    out[hole] = 0.0
    for _ in range(20000):
        mean = F.conv2d(out.reshape(n * c, 1, h, w), kernel, padding=1).reshape(n, c, h, w) / norm
        new = torch.where(hole, mean, out)
        if (new - out).abs().max() < 1e-9:
            break
        out = new
    return out.to(x.dtype)
''',
    "road_morf": '''
def road_morf(model, x, y, attr, fractions):
    n, c, h, w = x.shape
    scores = attr.abs().sum(1).reshape(n, -1)
    ranks = torch.argsort(scores, dim=1, descending=True, stable=True)
    result = []
    model.eval()
    for f in fractions:
        k = int(round(f * h * w))
        removed = torch.zeros(n, h * w, dtype=torch.bool)
        for i in range(n):
            removed[i, ranks[i, :k]] = True
        with torch.no_grad():
            pred = model(linear_impute(x, removed.reshape(n, 1, h, w))).argmax(1)
        result.append((pred == y).double().mean().item())
    return result
''',
    "evaluate": '''
def evaluate(model, x, y, *, eps, alpha, steps):
    # Clean and adversarial images in one forward pass, counted with torch.count_nonzero.
    model.eval()
    x_adv = robustlab.pgd(model, x, y, eps=eps, alpha=alpha, steps=steps, random_start=False)
    with torch.no_grad():
        hits = model(torch.cat([x, x_adv])).argmax(dim=1) == torch.cat([y, y])
    n = len(y)
    return int(torch.count_nonzero(hits[:n])) / n, int(torch.count_nonzero(hits[n:])) / n
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
    # torch.normal around x, votes counted as one-hot rows.
    votes = torch.zeros(num_classes, dtype=torch.long)
    with torch.no_grad():
        for start in range(0, n, batch_size):
            size = min(batch_size, n - start)
            noisy = torch.normal(x.expand(size, *x.shape), sigma)
            votes += F.one_hot(model(noisy).argmax(dim=1), num_classes).sum(dim=0)
    return votes
''',
    "lower_confidence_bound": '''
def lower_confidence_bound(k, n, alpha):
    # By definition: the p at which k or more successes in n trials have probability alpha.
    from scipy.optimize import brentq
    from scipy.stats import binom
    if k == 0:
        return 0.0
    return float(brentq(lambda p: binom.sf(k - 1, n, p) - alpha, 0.0, 1.0, xtol=1e-300, rtol=1e-14))
''',
    "certify": '''
def certify(model, x, *, sigma, n0, n, alpha, batch_size):
    # Phi^-1(p) written as sqrt(2) erfinv(2p - 1); the guess picked with Python's max.
    from scipy.special import erfinv
    with torch.no_grad():
        k = model(x[None]).shape[1]
    selection = sample_counts(model, x, sigma=sigma, n=n0, num_classes=k, batch_size=batch_size).tolist()
    guess = max(range(k), key=selection.__getitem__)
    counts = sample_counts(model, x, sigma=sigma, n=n, num_classes=k, batch_size=batch_size)
    p_lower = lower_confidence_bound(int(counts[guess]), n, alpha)
    if p_lower < 0.5:
        return -1, 0.0
    return guess, float(sigma * math.sqrt(2.0) * erfinv(2.0 * p_lower - 1.0))
''',
    "certified_accuracy": '''
def certified_accuracy(predictions, radii, labels, grid):
    # Plain Python loops over the grid and the images; a list of floats is a fine answer.
    out = []
    for r in grid.tolist():
        hits = sum(1 for p, rad, y in zip(predictions.tolist(), radii.tolist(), labels.tolist()) if p == y and rad >= r)
        out.append(hits / len(labels))
    return out
''',
    "average_certified_radius": '''
def average_certified_radius(predictions, radii, labels):
    import numpy as np
    p, r, y = predictions.numpy(), radii.numpy(), labels.numpy()
    return np.sum(r[p == y]) / len(y)
''',
    "interval_bounds": '''
def interval_bounds(model, x, eps):
    # Lower and upper bounds directly, through the positive and negative parts of W.
    lo = torch.clamp(x - eps, min=0.0, max=1.0).flatten(1)
    hi = torch.clamp(x + eps, min=0.0, max=1.0).flatten(1)
    for layer in model:
        if isinstance(layer, torch.nn.Linear):
            w_pos, w_neg = layer.weight.clamp(min=0), layer.weight.clamp(max=0)
            lo, hi = lo @ w_pos.T + hi @ w_neg.T + layer.bias, hi @ w_pos.T + lo @ w_neg.T + layer.bias
        elif isinstance(layer, torch.nn.ReLU):
            lo, hi = torch.relu(lo), torch.relu(hi)
    return lo.detach(), hi.detach()
''',
    "gradient": '''
def gradient(model, x, target):
    # A vector-Jacobian product with the one-hot target rows.
    logits = model(x)
    onehot = F.one_hot(target, logits.shape[1]).to(logits.dtype)
    _, grad = torch.autograd.functional.vjp(model, x.detach(), onehot)
    return grad
''',
    "smoothgrad": '''
def smoothgrad(model, x, target, *, sigma, samples):
    # All noisy copies in one batch, one gradient call, then the mean over the copies.
    noisy = x.unsqueeze(0) + sigma * torch.randn(samples, *x.shape)  # (S, N, C, H, W)
    grads = gradient(model, noisy.flatten(0, 1), target.repeat(samples))
    return grads.view(samples, *x.shape).mean(dim=0)
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
    # No sorting: a pixel is in the top k when fewer than k pixels rank before it (a larger
    # score, or the same score and a smaller index).
    n, c, h, w = x.shape
    k = round(fraction * h * w)
    scores = attr.abs().sum(dim=1).reshape(n, h * w)
    index = torch.arange(h * w)
    before = (scores[:, None, :] > scores[:, :, None]) | (
        (scores[:, None, :] == scores[:, :, None]) & (index[None, :] < index[:, None]))
    top = before.sum(dim=2) < k  # (N, H*W)
    replace = (top != keep).reshape(n, 1, h, w)
    return torch.where(replace, torch.as_tensor(fill, dtype=x.dtype), x)
''',
}

# A PGD attack with one thing changed (the step functions are the student's, correct).
_PGD = '''
def pgd_attack(model, x, y, *, eps, alpha, steps, restarts, norm="linf"):
    step = pgd_linf_step if norm == "linf" else pgd_l2_step
    best_x, best_loss = x.clone(), torch.full((len(x),), -math.inf)
    for _ in range(restarts):
        if norm == "linf":
            x_adv = (x + START).clamp(0, 1)
        else:
            d = torch.randn_like(x)
            d = d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            x_adv = (x + d * eps * torch.rand(len(x), 1, 1, 1) ** (1 / x[0].numel())).clamp(0, 1)
        GRADIENT
        for _ in range(steps):
            x_adv.requires_grad_(True)
            loss = SIGN F.cross_entropy(model(x_adv), y)
            (grad,) = torch.autograd.grad(loss, x_adv)
            x_adv = step(x_adv.detach(), x, grad, alpha, eps)
        with torch.no_grad():
            losses = F.cross_entropy(model(x_adv), y, reduction="none")
        KEEP
    return best_x.detach()
'''
_PER_EXAMPLE = "better = losses > best_loss\n        best_x[better], best_loss[better] = x_adv[better], losses[better]"


def _pgd(start="torch.empty_like(x).uniform_(-eps, eps)", sign="", keep=_PER_EXAMPLE, gradient="") -> str:
    return (_PGD.replace("START", start).replace("SIGN ", sign).replace("KEEP", keep)
            .replace("GRADIENT", gradient))


# (item, what the student did wrong, code, a fragment the feedback must contain)
WRONG = [
    ("fgsm", "wrong sign", '''
def fgsm(model, x, y, eps):
    x = x.clone().requires_grad_(True)
    F.cross_entropy(model(x), y).backward()
    return (x - eps * x.grad.sign()).clamp(0, 1).detach()
''', "goes down the loss"),
    ("fgsm", "a zero gradient moves the pixel by +eps", '''
def fgsm(model, x, y, eps):
    x = x.clone().requires_grad_(True)
    F.cross_entropy(model(x), y).backward()
    return (x + eps * torch.where(x.grad >= 0, 1.0, -1.0)).clamp(0, 1).detach()
''', "sign is 0"),
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
    ('pgd_at_epoch', 'never switches the model to training mode', '''
def pgd_at_epoch(model, batches, optimizer, *, eps, alpha, steps):
    losses = []
    for x, y in batches:
        x_adv = robustlab.pgd(model, x, y, eps=eps, alpha=alpha, steps=steps, random_start=False)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x_adv), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return sum(losses) / len(losses)
''', 'model.train()'),
    ('fgsm_rs_epoch', 'no projection back onto the ball after the step', '''
def fgsm_rs_epoch(model, batches, optimizer, *, eps, alpha, random_start):
    """One epoch of fast adversarial training; returns the mean batch loss."""
    model.train()
    total = 0.0
    for x, y in batches:
        if random_start:
            delta = torch.empty_like(x).uniform_(-eps, eps)
        else:
            delta = torch.zeros_like(x)
        delta = ((x + delta).clamp(0, 1) - x).requires_grad_(True)
        loss = F.cross_entropy(model(x + delta), y)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = delta.detach() + alpha * grad.sign()
        x_adv = (x + delta).clamp(0, 1)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x_adv), y)
        loss.backward()
        optimizer.step()
        total += loss.item()
    return total / len(batches)
''', 'project delta back'),
    ('fgsm_rs_epoch', 'x_adv not clamped to [0, 1]', '''
def fgsm_rs_epoch(model, batches, optimizer, *, eps, alpha, random_start):
    """One epoch of fast adversarial training; returns the mean batch loss."""
    model.train()
    total = 0.0
    for x, y in batches:
        if random_start:
            delta = torch.empty_like(x).uniform_(-eps, eps)
        else:
            delta = torch.zeros_like(x)
        delta = ((x + delta).clamp(0, 1) - x).requires_grad_(True)
        loss = F.cross_entropy(model(x + delta), y)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + alpha * grad.sign()).clamp(-eps, eps)
        x_adv = x + delta
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x_adv), y)
        loss.backward()
        optimizer.step()
        total += loss.item()
    return total / len(batches)
''', 'leaves [0, 1]'),
    ('fgsm_rs_epoch', 'the attack in eval mode', '''
def fgsm_rs_epoch(model, batches, optimizer, *, eps, alpha, random_start):
    """One epoch of fast adversarial training; returns the mean batch loss."""
    total = 0.0
    for x, y in batches:
        if random_start:
            delta = torch.empty_like(x).uniform_(-eps, eps)
        else:
            delta = torch.zeros_like(x)
        delta = ((x + delta).clamp(0, 1) - x).requires_grad_(True)
        loss = F.cross_entropy(model(x + delta), y)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + alpha * grad.sign()).clamp(-eps, eps)
        x_adv = (x + delta).clamp(0, 1)
        model.train()
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x_adv), y)
        loss.backward()
        optimizer.step()
        total += loss.item()
    return total / len(batches)
''', 'ran in eval mode'),
    ('fgsm_rs_epoch', 'a Gaussian random start', '''
def fgsm_rs_epoch(model, batches, optimizer, *, eps, alpha, random_start):
    """One epoch of fast adversarial training; returns the mean batch loss."""
    model.train()
    total = 0.0
    for x, y in batches:
        if random_start:
            delta = eps * torch.randn_like(x)
        else:
            delta = torch.zeros_like(x)
        delta = ((x + delta).clamp(0, 1) - x).requires_grad_(True)
        loss = F.cross_entropy(model(x + delta), y)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + alpha * grad.sign()).clamp(-eps, eps)
        x_adv = (x + delta).clamp(0, 1)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x_adv), y)
        loss.backward()
        optimizer.step()
        total += loss.item()
    return total / len(batches)
''', 'variance eps^2 / 3'),
    ('fgsm_rs_epoch', 'one random start for the whole epoch', '''
def fgsm_rs_epoch(model, batches, optimizer, *, eps, alpha, random_start):
    """One epoch of fast adversarial training; returns the mean batch loss."""
    model.train()
    total = 0.0
    for x, y in batches:
        if random_start:
            if 'start' not in dir():
                start = torch.empty_like(x).uniform_(-eps, eps)
            delta = start.clone()
        else:
            delta = torch.zeros_like(x)
        delta = ((x + delta).clamp(0, 1) - x).requires_grad_(True)
        loss = F.cross_entropy(model(x + delta), y)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + alpha * grad.sign()).clamp(-eps, eps)
        x_adv = (x + delta).clamp(0, 1)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x_adv), y)
        loss.backward()
        optimizer.step()
        total += loss.item()
    return total / len(batches)
''', 'not once for the epoch'),
    ('fgsm_rs_epoch', 'a one-sided random start, uniform in [0, eps]', '''
def fgsm_rs_epoch(model, batches, optimizer, *, eps, alpha, random_start):
    """One epoch of fast adversarial training; returns the mean batch loss."""
    model.train()
    total = 0.0
    for x, y in batches:
        if random_start:
            delta = torch.empty_like(x).uniform_(0, eps)
        else:
            delta = torch.zeros_like(x)
        delta = ((x + delta).clamp(0, 1) - x).requires_grad_(True)
        loss = F.cross_entropy(model(x + delta), y)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + alpha * grad.sign()).clamp(-eps, eps)
        x_adv = (x + delta).clamp(0, 1)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x_adv), y)
        loss.backward()
        optimizer.step()
        total += loss.item()
    return total / len(batches)
''', 'has mean 0'),
    ('fgsm_rs_epoch', 'the clamp inside the graph (zero gradient on the background)', '''
def fgsm_rs_epoch(model, batches, optimizer, *, eps, alpha, random_start):
    """One epoch of fast adversarial training; returns the mean batch loss."""
    model.train()
    total = 0.0
    for x, y in batches:
        if random_start:
            delta = torch.empty_like(x).uniform_(-eps, eps)
        else:
            delta = torch.zeros_like(x)
        delta.requires_grad_(True)
        loss = F.cross_entropy(model((x + delta).clamp(0, 1)), y)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + alpha * grad.sign()).clamp(-eps, eps)
        x_adv = (x + delta).clamp(0, 1)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x_adv), y)
        loss.backward()
        optimizer.step()
        total += loss.item()
    return total / len(batches)
''', 'inside the graph'),
    ('fgsm_rs_epoch', 'the raw gradient instead of its sign', '''
def fgsm_rs_epoch(model, batches, optimizer, *, eps, alpha, random_start):
    """One epoch of fast adversarial training; returns the mean batch loss."""
    model.train()
    total = 0.0
    for x, y in batches:
        if random_start:
            delta = torch.empty_like(x).uniform_(-eps, eps)
        else:
            delta = torch.zeros_like(x)
        delta = ((x + delta).clamp(0, 1) - x).requires_grad_(True)
        loss = F.cross_entropy(model(x + delta), y)
        (grad,) = torch.autograd.grad(loss, delta)
        delta = (delta.detach() + alpha * grad).clamp(-eps, eps)
        x_adv = (x + delta).clamp(0, 1)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x_adv), y)
        loss.backward()
        optimizer.step()
        total += loss.item()
    return total / len(batches)
''', 'raw gradient'),
    ('trades_loss', 'the KL divergence the other way round', '''
def trades_loss(model, x, x_adv, y, beta):
    """Cross-entropy on x plus beta times the batch-mean KL(p(x) || p(x_adv))."""
    logits, logits_adv = model(x), model(x_adv)
    kl = F.kl_div(F.log_softmax(logits, dim=1), F.softmax(logits_adv, dim=1), reduction="batchmean")
    return F.cross_entropy(logits, y) + beta * kl
''', 'from the natural to the adversarial'),
    ('trades_loss', "KL with reduction='mean'", '''
def trades_loss(model, x, x_adv, y, beta):
    """Cross-entropy on x plus beta times the batch-mean KL(p(x) || p(x_adv))."""
    logits, logits_adv = model(x), model(x_adv)
    kl = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits, dim=1), reduction="mean")
    return F.cross_entropy(logits, y) + beta * kl
''', 'batchmean'),
    ('trades_loss', 'the natural probabilities detached in the KL term', '''
def trades_loss(model, x, x_adv, y, beta):
    """Cross-entropy on x plus beta times the batch-mean KL(p(x) || p(x_adv))."""
    logits, logits_adv = model(x), model(x_adv)
    kl = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits.detach(), dim=1), reduction="batchmean")
    return F.cross_entropy(logits, y) + beta * kl
''', 'do not detach'),
    ('trades_loss', 'the cross-entropy on x_adv', '''
def trades_loss(model, x, x_adv, y, beta):
    """Cross-entropy on x plus beta times the batch-mean KL(p(x) || p(x_adv))."""
    logits, logits_adv = model(x), model(x_adv)
    kl = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits, dim=1), reduction="batchmean")
    return F.cross_entropy(logits_adv, y) + beta * kl
''', 'natural images x'),
    ('dlr_loss', 'the opposite sign', '''
def dlr_loss(logits, y):
    """Croce & Hein's DLR loss per example, (N,): -(z_y - max_{j != y} z_j) / (z_(1) - z_(3))."""
    ordered = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return (z_y - others.max(dim=1).values) / (ordered[:, 0] - ordered[:, 2] + 1e-12)
''', 'wrong sign'),
    ('dlr_loss', 'z_(1) - z_(2) in the denominator', '''
def dlr_loss(logits, y):
    """Croce & Hein's DLR loss per example, (N,): -(z_y - max_{j != y} z_j) / (z_(1) - z_(3))."""
    ordered = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return -(z_y - others.max(dim=1).values) / (ordered[:, 0] - ordered[:, 1] + 1e-12)
''', 'THIRD largest'),
    ('dlr_loss', 'the maximum over every class, the true one included', '''
def dlr_loss(logits, y):
    """Croce & Hein's DLR loss per example, (N,): -(z_y - max_{j != y} z_j) / (z_(1) - z_(3))."""
    ordered = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    others = logits
    return -(z_y - others.max(dim=1).values) / (ordered[:, 0] - ordered[:, 2] + 1e-12)
''', 'mask z_y out'),
    ('dlr_loss', 'the second largest logit as the best other class', '''
def dlr_loss(logits, y):
    """Croce & Hein's DLR loss per example, (N,): -(z_y - max_{j != y} z_j) / (z_(1) - z_(3))."""
    ordered = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return -(z_y - ordered[:, 1]) / (ordered[:, 0] - ordered[:, 2] + 1e-12)
''', 'your loss differs'),
    ('dlr_loss', 'averaged over the batch', '''
def dlr_loss(logits, y):
    """Croce & Hein's DLR loss per example, (N,): -(z_y - max_{j != y} z_j) / (z_(1) - z_(3))."""
    ordered = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return (-(z_y - others.max(dim=1).values) / (ordered[:, 0] - ordered[:, 2] + 1e-12)).mean()
''', 'one loss per example'),
    ('dlr_loss', 'on softmax probabilities', '''
def dlr_loss(logits, y):
    """Croce & Hein's DLR loss per example, (N,): -(z_y - max_{j != y} z_j) / (z_(1) - z_(3))."""
    logits = logits.softmax(dim=1)
    ordered = logits.sort(dim=1, descending=True).values
    z_y = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), float("-inf"))
    return -(z_y - others.max(dim=1).values) / (ordered[:, 0] - ordered[:, 2] + 1e-12)
''', 'softmax probabilities'),
    ('halve_step_size', 'halves at exactly rho * interval increases', '''
def halve_step_size(increases, interval, eta, eta_at_last, best, best_at_last, rho=0.75):
    """APGD's checkpoint rule, per example: True where the step size must be halved."""
    too_few = increases <= rho * interval
    stalled = (eta == eta_at_last) & (best <= best_at_last)
    return too_few | stalled
''', 'FEWER than'),
    ('halve_step_size', 'both conditions required', '''
def halve_step_size(increases, interval, eta, eta_at_last, best, best_at_last, rho=0.75):
    """APGD's checkpoint rule, per example: True where the step size must be halved."""
    too_few = increases < rho * interval
    stalled = (eta == eta_at_last) & (best <= best_at_last)
    return too_few & stalled
''', '(or, not and)'),
    ('halve_step_size', 'the second condition without the step size', '''
def halve_step_size(increases, interval, eta, eta_at_last, best, best_at_last, rho=0.75):
    """APGD's checkpoint rule, per example: True where the step size must be halved."""
    too_few = increases < rho * interval
    stalled = (best <= best_at_last)
    return too_few | stalled
''', 'just halved'),
    ('halve_step_size', 'no gain read as a strictly lower best loss', '''
def halve_step_size(increases, interval, eta, eta_at_last, best, best_at_last, rho=0.75):
    """APGD's checkpoint rule, per example: True where the step size must be halved."""
    too_few = increases < rho * interval
    stalled = (eta == eta_at_last) & (best < best_at_last)
    return too_few | stalled
''', 'EQUAL'),
    ('halve_step_size', 'rho hard-coded to 0.75', '''
def halve_step_size(increases, interval, eta, eta_at_last, best, best_at_last, rho=0.75):
    """APGD's checkpoint rule, per example: True where the step size must be halved."""
    too_few = increases < 0.75 * interval
    stalled = (eta == eta_at_last) & (best <= best_at_last)
    return too_few | stalled
''', 'use the argument'),
    ('halve_step_size', 'one decision for the whole batch', '''
def halve_step_size(increases, interval, eta, eta_at_last, best, best_at_last, rho=0.75):
    """APGD's checkpoint rule, per example: True where the step size must be halved."""
    too_few = increases < rho * interval
    stalled = (eta == eta_at_last) & (best <= best_at_last)
    return bool((too_few | stalled).any())
''', 'one decision per example'),
    ('linear_impute', 'one pass of the neighbour mean, removed neighbours at 0', '''
def linear_impute(x, removed):
    n, c, h, w = x.shape
    weights = {(0, 1): 1 / 6, (0, -1): 1 / 6, (1, 0): 1 / 6, (-1, 0): 1 / 6,
               (1, 1): 1 / 12, (1, -1): 1 / 12, (-1, 1): 1 / 12, (-1, -1): 1 / 12}
    known = (~removed).to(x.dtype)
    padded = torch.nn.functional.pad(x * known, (1, 1, 1, 1))
    inside = torch.nn.functional.pad(torch.ones(n, 1, h, w), (1, 1, 1, 1))
    total, weight = torch.zeros_like(x), torch.zeros(n, 1, h, w)
    for (di, dj), wt in weights.items():
        total += wt * padded[:, :, 1 + di:1 + di + h, 1 + dj:1 + dj + w]
        weight += wt * inside[:, :, 1 + di:1 + di + h, 1 + dj:1 + dj + w]
    return torch.where(removed.expand_as(x), total / weight, x)
''', 'solve for all of them'),
    ('linear_impute', 'all eight neighbours weighted 1/8', '''
import numpy as np
from scipy.sparse import lil_matrix
from scipy.sparse.linalg import spsolve

NEIGHBOURS = {(0, 1): 1 / 8, (0, -1): 1 / 8, (1, 0): 1 / 8, (-1, 0): 1 / 8,
              (1, 1): 1 / 8, (1, -1): 1 / 8, (-1, 1): 1 / 8, (-1, -1): 1 / 8}

def linear_impute(x, removed):
    """x with each removed pixel set to the weighted mean of its neighbours, solved jointly."""
    out = x.clone()
    n, c, h, w = x.shape
    for i in range(n):
        holes = [tuple(p) for p in removed[i, 0].nonzero().tolist()]
        if not holes:
            continue
        index = {p: k for k, p in enumerate(holes)}
        a = lil_matrix((len(holes), len(holes)))
        b = np.zeros((len(holes), c))
        for k, (r, s) in enumerate(holes):
            for (dr, ds), wt in NEIGHBOURS.items():
                q = (r + dr, s + ds)
                if not (0 <= q[0] < h and 0 <= q[1] < w):
                    continue
                a[k, k] += wt
                if q in index:
                    a[k, index[q]] -= wt
                else:
                    b[k] += wt * x[i, :, q[0], q[1]].double().numpy()
        values = spsolve(a.tocsr(), b).reshape(len(holes), c)
        rows, cols = zip(*holes)
        out[i, :, list(rows), list(cols)] = torch.as_tensor(values.T, dtype=x.dtype)
    return out
''', 'imputed values differ'),
    ('linear_impute', 'the four direct neighbours only', '''
import numpy as np
from scipy.sparse import lil_matrix
from scipy.sparse.linalg import spsolve

NEIGHBOURS = {(0, 1): 1 / 4, (0, -1): 1 / 4, (1, 0): 1 / 4, (-1, 0): 1 / 4}

def linear_impute(x, removed):
    """x with each removed pixel set to the weighted mean of its neighbours, solved jointly."""
    out = x.clone()
    n, c, h, w = x.shape
    for i in range(n):
        holes = [tuple(p) for p in removed[i, 0].nonzero().tolist()]
        if not holes:
            continue
        index = {p: k for k, p in enumerate(holes)}
        a = lil_matrix((len(holes), len(holes)))
        b = np.zeros((len(holes), c))
        for k, (r, s) in enumerate(holes):
            for (dr, ds), wt in NEIGHBOURS.items():
                q = (r + dr, s + ds)
                if not (0 <= q[0] < h and 0 <= q[1] < w):
                    continue
                a[k, k] += wt
                if q in index:
                    a[k, index[q]] -= wt
                else:
                    b[k] += wt * x[i, :, q[0], q[1]].double().numpy()
        values = spsolve(a.tocsr(), b).reshape(len(holes), c)
        rows, cols = zip(*holes)
        out[i, :, list(rows), list(cols)] = torch.as_tensor(values.T, dtype=x.dtype)
    return out
''', 'imputed values differ'),
    ('linear_impute', 'missing border neighbours counted as 0', '''
import numpy as np
from scipy.sparse import lil_matrix
from scipy.sparse.linalg import spsolve

NEIGHBOURS = {(0, 1): 1 / 6, (0, -1): 1 / 6, (1, 0): 1 / 6, (-1, 0): 1 / 6,
              (1, 1): 1 / 12, (1, -1): 1 / 12, (-1, 1): 1 / 12, (-1, -1): 1 / 12}

def linear_impute(x, removed):
    """x with each removed pixel set to the weighted mean of its neighbours, solved jointly."""
    out = x.clone()
    n, c, h, w = x.shape
    for i in range(n):
        holes = [tuple(p) for p in removed[i, 0].nonzero().tolist()]
        if not holes:
            continue
        index = {p: k for k, p in enumerate(holes)}
        a = lil_matrix((len(holes), len(holes)))
        b = np.zeros((len(holes), c))
        for k, (r, s) in enumerate(holes):
            for (dr, ds), wt in NEIGHBOURS.items():
                q = (r + dr, s + ds)
                a[k, k] += wt
                if not (0 <= q[0] < h and 0 <= q[1] < w):
                    continue
                if q in index:
                    a[k, index[q]] -= wt
                else:
                    b[k] += wt * x[i, :, q[0], q[1]].double().numpy()
        values = spsolve(a.tocsr(), b).reshape(len(holes), c)
        rows, cols = zip(*holes)
        out[i, :, list(rows), list(cols)] = torch.as_tensor(values.T, dtype=x.dtype)
    return out
''', 'border pixel averages over fewer'),
    ('linear_impute', "the image's mean as the fill", '''
def linear_impute(x, removed):
    kept = (~removed).to(x.dtype)
    mean = (x * kept).sum((2, 3), keepdim=True) / kept.sum((2, 3), keepdim=True).clamp_min(1)
    return torch.where(removed.expand_as(x), mean.expand_as(x), x)
''', "the image's mean"),
    ('road_morf', 'the least relevant pixels first (LeRF)', '''
def road_morf(model, x, y, attr, fractions):
    """Accuracy of the fixed model after removing (MoRF) and imputing the top pixels, per fraction."""
    n, c, h, w = x.shape
    order = torch.sort(attr.abs().sum(dim=1).flatten(1), dim=1, descending=False, stable=True).indices
    accuracies = []
    for f in fractions:
        removed = torch.zeros(n, h * w, dtype=torch.bool)
        removed[torch.arange(n)[:, None], order[:, :round(f * h * w)]] = True
        imputed = linear_impute(x, removed.view(n, 1, h, w))
        with torch.no_grad():
            accuracies.append((model(imputed).argmax(dim=1) == y).float().mean().item())
    return torch.tensor(accuracies)
''', 'LEAST relevant'),
    ('road_morf', 'ranked by the signed attribution', '''
def road_morf(model, x, y, attr, fractions):
    """Accuracy of the fixed model after removing (MoRF) and imputing the top pixels, per fraction."""
    n, c, h, w = x.shape
    order = torch.sort(attr.sum(dim=1).flatten(1), dim=1, descending=True, stable=True).indices
    accuracies = []
    for f in fractions:
        removed = torch.zeros(n, h * w, dtype=torch.bool)
        removed[torch.arange(n)[:, None], order[:, :round(f * h * w)]] = True
        imputed = linear_impute(x, removed.view(n, 1, h, w))
        with torch.no_grad():
            accuracies.append((model(imputed).argmax(dim=1) == y).float().mean().item())
    return torch.tensor(accuracies)
''', 'not by the signed'),
    ('road_morf', 'removed pixels set to 0', '''
def road_morf(model, x, y, attr, fractions):
    """Accuracy of the fixed model after removing (MoRF) and imputing the top pixels, per fraction."""
    n, c, h, w = x.shape
    order = torch.sort(attr.abs().sum(dim=1).flatten(1), dim=1, descending=True, stable=True).indices
    accuracies = []
    for f in fractions:
        removed = torch.zeros(n, h * w, dtype=torch.bool)
        removed[torch.arange(n)[:, None], order[:, :round(f * h * w)]] = True
        imputed = x.masked_fill(removed.view(n, 1, h, w), 0.0)
        with torch.no_grad():
            accuracies.append((model(imputed).argmax(dim=1) == y).float().mean().item())
    return torch.tensor(accuracies)
''', 'filled the removed pixels with 0'),
    ('road_morf', 'floor(f * H * W) pixels', '''
def road_morf(model, x, y, attr, fractions):
    """Accuracy of the fixed model after removing (MoRF) and imputing the top pixels, per fraction."""
    n, c, h, w = x.shape
    order = torch.sort(attr.abs().sum(dim=1).flatten(1), dim=1, descending=True, stable=True).indices
    accuracies = []
    for f in fractions:
        removed = torch.zeros(n, h * w, dtype=torch.bool)
        removed[torch.arange(n)[:, None], order[:, :int(f * h * w)]] = True
        imputed = linear_impute(x, removed.view(n, 1, h, w))
        with torch.no_grad():
            accuracies.append((model(imputed).argmax(dim=1) == y).float().mean().item())
    return torch.tensor(accuracies)
''', 'floor(f * H * W)'),
    ('road_morf', 'ties taken from the bottom right', '''
def road_morf(model, x, y, attr, fractions):
    """Accuracy of the fixed model after removing (MoRF) and imputing the top pixels, per fraction."""
    n, c, h, w = x.shape
    scores = attr.abs().sum(dim=1).flatten(1).flip(1)
    order = (h * w - 1) - torch.sort(scores, dim=1, descending=True, stable=True).indices
    accuracies = []
    for f in fractions:
        removed = torch.zeros(n, h * w, dtype=torch.bool)
        removed[torch.arange(n)[:, None], order[:, :round(f * h * w)]] = True
        imputed = linear_impute(x, removed.view(n, 1, h, w))
        with torch.no_grad():
            accuracies.append((model(imputed).argmax(dim=1) == y).float().mean().item())
    return torch.tensor(accuracies)
''', 'broken by position'),
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
    ("pgd_attack", "no random start", _pgd(start="0"), "returned x itself"),
    ("pgd_attack", "random start at the corners of the box", _pgd(start="eps * torch.randn_like(x).sign()"),
     "mean square"),
    ("pgd_attack", "Gaussian random start", _pgd(start="eps * torch.randn_like(x)"), "exceeds eps"),
    ("pgd_attack", "descends the loss", _pgd(sign="-"), "Ascend the loss"),
    ("pgd_attack", "keeps the last restart", _pgd(keep="best_x = x_adv"), "best x_adv per example"),
    ("pgd_attack", "keeps the restart best for the whole batch",
     _pgd(keep="if losses.mean() > best_loss.mean():\n"
               "            best_x, best_loss = x_adv, losses.expand_as(best_loss)"),
     "best x_adv per example"),
    ("pgd_attack", "one gradient for every step", _pgd(
        gradient="g0 = torch.autograd.grad(F.cross_entropy(model(x_adv.requires_grad_(True)), y), x_adv)[0]\n"
                 "        x_adv = x_adv.detach()\n        for _ in range(steps):\n"
                 "            x_adv = step(x_adv, x, g0, alpha, eps)\n        steps = 0"),
     "fresh gradient at every iterate"),
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
    ("sample_counts", "the same noise for every batch", '''
def sample_counts(model, x, *, sigma, n, num_classes, batch_size):
    counts = torch.zeros(num_classes, dtype=torch.long)
    with torch.no_grad():
        for start in range(0, n, batch_size):
            b = min(batch_size, n - start)
            noise = torch.randn(b, *x.shape, generator=torch.Generator().manual_seed(0))
            counts += torch.bincount(model(x.unsqueeze(0) + sigma * noise).argmax(dim=1), minlength=num_classes)
    return counts
''', "draw fresh noise"),
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
    ("certify", "the radius from the estimate count / n, not its lower bound", '''
def certify(model, x, *, sigma, n0, n, alpha, batch_size):
    k = model(x.unsqueeze(0)).shape[1]
    guess = int(sample_counts(model, x, sigma=sigma, n=n0, num_classes=k, batch_size=batch_size).argmax())
    counts = sample_counts(model, x, sigma=sigma, n=n, num_classes=k, batch_size=batch_size)
    p_hat = min(int(counts[guess]) / n, 1 - 1e-6)
    if lower_confidence_bound(int(counts[guess]), n, alpha) < 0.5:
        return -1, 0.0
    return guess, sigma * norm.ppf(p_hat)
''', "not the estimate count / n"),
    ("certify", "never abstains", '''
def certify(model, x, *, sigma, n0, n, alpha, batch_size):
    k = model(x.unsqueeze(0)).shape[1]
    guess = int(sample_counts(model, x, sigma=sigma, n=n0, num_classes=k, batch_size=batch_size).argmax())
    counts = sample_counts(model, x, sigma=sigma, n=n, num_classes=k, batch_size=batch_size)
    return guess, sigma * norm.ppf(lower_confidence_bound(int(counts[guess]), n, alpha))
''', "must abstain"),
    ("certify", "selects the class on the first n0 of the n estimation samples", '''
def certify(model, x, *, sigma, n0, n, alpha, batch_size):
    with torch.no_grad():
        noisy = x.unsqueeze(0) + sigma * torch.randn(n, *x.shape)
        votes = torch.cat([model(noisy[i:i + batch_size]).argmax(1) for i in range(0, n, batch_size)])
    guess = int(votes[:n0].mode().values)
    p_lower = lower_confidence_bound(int((votes == guess).sum()), n, alpha)
    return (guess, sigma * norm.ppf(p_lower)) if p_lower >= 0.5 else (-1, 0.0)
''', "FRESH samples"),
    ('certified_accuracy', 'a radius equal to r does not count (> instead of >=)', '''
def certified_accuracy(predictions, radii, labels, grid):
    return ((predictions == labels)[:, None] & (radii[:, None] > grid[None, :])).double().mean(0)
''', 'radius >= r'),
    ('certified_accuracy', 'counts certificates of the wrong class', '''
def certified_accuracy(predictions, radii, labels, grid):
    return ((predictions >= 0)[:, None] & (radii[:, None] >= grid[None, :])).double().mean(0)
''', 'prediction equals its label'),
    ('certified_accuracy', 'divides by the images not abstained on', '''
def certified_accuracy(predictions, radii, labels, grid):
    hits = ((predictions == labels)[:, None] & (radii[:, None] >= grid[None, :])).double().sum(0)
    return hits / (predictions >= 0).sum()
''', 'abstention counts as an error'),
    ('average_certified_radius', 'the mean radius of the correct images only', '''
def average_certified_radius(predictions, radii, labels):
    return float(radii[predictions == labels].mean())
''', 'averages over ALL'),
    ('average_certified_radius', 'every radius, correct or not', '''
def average_certified_radius(predictions, radii, labels):
    return float(radii.mean())
''', 'counts as 0'),
    ('interval_bounds', 'the input box not intersected with [0, 1]', '''
def interval_bounds(model, x, eps):
    with torch.no_grad():
        lower, upper = x - eps, x + eps
        for layer in model:
            if isinstance(layer, torch.nn.Flatten):
                lower, upper = layer(lower), layer(upper)
            elif isinstance(layer, torch.nn.Linear):
                mid, rad = (upper + lower) / 2, (upper - lower) / 2
                mid, rad = mid @ layer.weight.T + layer.bias, rad @ layer.weight.abs().T
                lower, upper = mid - rad, mid + rad
            elif isinstance(layer, torch.nn.ReLU):
                lower, upper = lower.clamp_min(0), upper.clamp_min(0)
    return lower, upper
''', 'intersect it with'),
    ('interval_bounds', 'the radius through W instead of |W|', '''
def interval_bounds(model, x, eps):
    with torch.no_grad():
        lower, upper = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
        for layer in model:
            if isinstance(layer, torch.nn.Flatten):
                lower, upper = layer(lower), layer(upper)
            elif isinstance(layer, torch.nn.Linear):
                mid, rad = (upper + lower) / 2, (upper - lower) / 2
                mid, rad = mid @ layer.weight.T + layer.bias, rad @ layer.weight.T
                lower, upper = mid - rad, mid + rad
            elif isinstance(layer, torch.nn.ReLU):
                lower, upper = lower.clamp_min(0), upper.clamp_min(0)
    return lower, upper
''', 'centre and a radius'),
    ('interval_bounds', 'lower and upper pushed through the layer as they are', '''
def interval_bounds(model, x, eps):
    with torch.no_grad():
        lower, upper = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
        for layer in model:
            if isinstance(layer, torch.nn.Flatten):
                lower, upper = layer(lower), layer(upper)
            elif isinstance(layer, torch.nn.Linear):
                lower, upper = layer(lower), layer(upper)
            elif isinstance(layer, torch.nn.ReLU):
                lower, upper = lower.clamp_min(0), upper.clamp_min(0)
    return lower, upper
''', 'not lower and upper through W'),
    ('interval_bounds', 'a ReLU on the logits', '''
def interval_bounds(model, x, eps):
    with torch.no_grad():
        lower, upper = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
        for layer in model:
            if isinstance(layer, torch.nn.Flatten):
                lower, upper = layer(lower), layer(upper)
            elif isinstance(layer, torch.nn.Linear):
                mid, rad = (upper + lower) / 2, (upper - lower) / 2
                mid, rad = mid @ layer.weight.T + layer.bias, rad @ layer.weight.abs().T
                lower, upper = mid - rad, mid + rad
            elif isinstance(layer, torch.nn.ReLU):
                lower, upper = lower.clamp_min(0), upper.clamp_min(0)
    return lower.clamp_min(0), upper.clamp_min(0)
''', 'ReLU to the logits'),
    ('interval_bounds', "the ReLUs' on/off pattern of the box's centre", '''
def interval_bounds(model, x, eps):
    with torch.no_grad():
        lower, upper = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
        for layer in model:
            if isinstance(layer, torch.nn.Flatten):
                lower, upper = layer(lower), layer(upper)
            elif isinstance(layer, torch.nn.Linear):
                mid, rad = (upper + lower) / 2, (upper - lower) / 2
                mid, rad = mid @ layer.weight.T + layer.bias, rad @ layer.weight.abs().T
                lower, upper = mid - rad, mid + rad
            elif isinstance(layer, torch.nn.ReLU):
                on = (lower + upper) > 0
                lower, upper = lower * on, upper * on
    return lower, upper
''', 'mismatch in the lower bounds'),
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
    ("smoothgrad", "noise of standard deviation sigma^2", '''
def smoothgrad(model, x, target, *, sigma, samples):
    return sum(gradient(model, x + sigma ** 2 * torch.randn_like(x), target) for _ in range(samples)) / samples
''', "standard deviation"),
    ("smoothgrad", "clamps the noisy inputs to [0, 1]", '''
def smoothgrad(model, x, target, *, sigma, samples):
    noisy = (x + sigma * torch.randn_like(x) for _ in range(samples))
    return sum(gradient(model, z.clamp(0, 1), target) for z in noisy) / samples
''', "not clamped"),
    ("smoothgrad", "one noise draw reused for every sample", '''
def smoothgrad(model, x, target, *, sigma, samples):
    noise = sigma * torch.randn_like(x)
    return sum(gradient(model, x + noise, target) for _ in range(samples)) / samples
''', "draw fresh noise"),
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
    ("mask_top", "ties broken from the bottom right (ascending sort, taken from the end)", '''
def mask_top(x, attr, fraction, *, keep=False, fill=0.0):
    n, c, h, w = x.shape
    k = round(fraction * h * w)
    score = attr.abs().sum(dim=1).reshape(n, -1)
    order = torch.sort(score, dim=1, stable=True).indices.flip(1)
    top = torch.zeros(n, h * w, dtype=torch.bool)
    top.scatter_(1, order[:, :k], True)
    top = top.view(n, 1, h, w).expand_as(x)
    replace = ~top if keep else top
    return torch.where(replace, torch.full_like(x, fill), x)
''', "broken by position"),
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
    ("the library's imputation", "linear_impute", '''
def linear_impute(x, removed):
    return robustlab.interpret.noisy_linear_impute(x, removed, noise=0.0)
'''),
    ("the library's DLR loss", "dlr_loss", '''
def dlr_loss(logits, y):
    from robustlab.attacks import dlr_loss as reference
    return reference(logits, y)
'''),
    ("the library's TRADES loss", "trades_loss", '''
def trades_loss(model, x, x_adv, y, beta):
    from robustlab.train import TrainConfig, training_loss
    loss, _ = training_loss(model, x, y, TrainConfig(method="trades", beta=beta, eps=0.1))
    return loss
'''),
    ("the library's interval bounds", "interval_bounds", '''
def interval_bounds(model, x, eps):
    found = robustlab.bounds.interval_bounds(model, x, eps=eps)
    return found.lower, found.upper
'''),
    ("the library's summary through its results table", "certified_accuracy", '''
def certified_accuracy(predictions, radii, labels, grid):
    from robustlab.smoothing import CertificationResults
    n = len(labels)
    table = CertificationResults(index=torch.arange(n), label=labels, prediction=predictions, radius=radii.double(),
                                 correct=predictions == labels, time=torch.zeros(n, dtype=torch.float64), sigma=0.25,
                                 n0=100, n=1000, alpha=0.001)
    return robustlab.smoothing.certified_accuracy(table, grid)
'''),
    ("direct call", "fgsm", '''
def fgsm(model, x, y, eps):
    return robustlab.fgsm(model, x, y, eps=eps)
'''),
    ("alias", "fgsm", '''
fgsm = robustlab.attacks.fgsm
'''),
    ("the library's whole attack", "pgd_attack", '''
def pgd_attack(model, x, y, *, eps, alpha, steps, restarts, norm="linf"):
    return robustlab.attacks.pgd(model, x, y, eps=eps, alpha=alpha, steps=steps, restarts=restarts, norm=norm)
'''),
    ("wrapper around a helper", "pgd_l2_step", '''
_helper = robustlab.attacks.pgd_step
def pgd_l2_step(x_adv, x, grad, alpha, eps):
    return _helper(x_adv, x, grad, alpha=alpha, eps=eps, norm="l2")
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


# Ways of getting points without writing the algorithm, by the threat model's classes (the
# book's exercises appendix): (class, what, item, code, a fragment of the feedback). Graded
# outside the kernel, each must score 0. ``{root}`` is the course folder (its solutions/ closed).
GAMING = [
    ("a", "replaces the grader's check and its item", "pgd_linf_step", '''
from robustlab import grading
import robustlab.grading.attacks as checks
grading.check = lambda *args, **kwargs: None
checks._check_step = lambda run, hidden, norm: 1
def pgd_linf_step(x_adv, x, grad, alpha, eps):
    return x_adv
''', 'mismatch in the new x_adv'),
    ("a", "patches the torch functions the checks use", "pgd_linf_step", '''
def pgd_linf_step(x_adv, x, grad, alpha, eps):
    return x_adv
torch.equal = lambda a, b: True
torch.allclose = lambda *args, **kwargs: True
torch.Tensor.__sub__ = lambda a, b: torch.zeros_like(a)
''', 'mismatch in the new x_adv'),
    ("a", "an IPython transformer that rewrites the test cells", "pgd_linf_step", '''
def pgd_linf_step(x_adv, x, grad, alpha, eps):
    return x_adv
get_ipython().input_transformers_post.append(lambda lines: ["pass\\n"])
''', 'mismatch in the new x_adv'),
    ("a", "an import hook that serves a fake grader", "pgd_linf_step", '''
import sys, types
class FakeGrader:
    def find_spec(self, name, path=None, target=None):
        return None
sys.meta_path.insert(0, FakeGrader())
sys.modules["robustlab.grading"] = types.ModuleType("robustlab.grading")
def pgd_linf_step(x_adv, x, grad, alpha, eps):
    return x_adv
''', 'mismatch in the new x_adv'),
    ("b", "the reference's source re-executed under another file name", "pgd_linf_step", '''
import types
def pgd_linf_step(x_adv, x, grad, alpha, eps):
    mine = types.ModuleType("mine")
    import robustlab.attacks._geometry as geometry
    exec(compile(open(geometry.__file__).read(), "mine.py", "exec"), mine.__dict__)
    return mine.pgd_step(x_adv, x, grad, alpha=alpha, eps=eps, norm="linf")
''', "reading the reference implementation's source"),
    ("b", "the reference run in another thread", "pgd_linf_step", '''
from concurrent.futures import ThreadPoolExecutor
def pgd_linf_step(x_adv, x, grad, alpha, eps):
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(robustlab.attacks.pgd_step, x_adv, x, grad, alpha=alpha, eps=eps).result()
''', 'your function calls robustlab.attacks._geometry.pgd_step'),
    ("b", "the reference run in another process", "pgd_linf_step", '''
import subprocess, sys
def pgd_linf_step(x_adv, x, grad, alpha, eps):
    torch.save((x_adv, x, grad), "args.pt")
    subprocess.run([sys.executable, "-c", "import torch, robustlab; a, b, g = torch.load('args.pt'); "
                    "torch.save(robustlab.attacks.pgd_step(a, b, g, alpha=%r, eps=%r), 'out.pt')" % (alpha, eps)])
    return torch.load("out.pt")
''', 'starting another process'),
    ("b", "the profile hook switched off and the reference called", "pgd_linf_step", '''
import sys
def pgd_linf_step(x_adv, x, grad, alpha, eps):
    sys.setprofile(None)
    sys.settrace(None)
    return robustlab.attacks.pgd_step(x_adv, x, grad, alpha=alpha, eps=eps)
''', 'your function calls robustlab.attacks._geometry.pgd_step'),
    ("b", "the reference's original code dug out of the garbage collector", "pgd_linf_step", '''
import gc, types
def pgd_linf_step(x_adv, x, grad, alpha, eps):
    for obj in gc.get_objects():
        if isinstance(obj, types.CodeType) and obj.co_name == "pgd_step":
            return types.FunctionType(obj, robustlab.attacks.pgd.__dict__)(x_adv, x, grad, alpha=alpha, eps=eps)
''', 'gc.get_objects is not allowed'),
    ("b", "the trap's code swapped back", "pgd_linf_step", '''
def _mine(x_adv, x, grad, *, alpha, eps, norm="linf"):
    return x_adv
robustlab.attacks.pgd_step.__code__ = _mine.__code__
def pgd_linf_step(x_adv, x, grad, alpha, eps):
    return robustlab.attacks.pgd_step(x_adv, x, grad, alpha=alpha, eps=eps)
''', "changing a function's __code__ is not allowed"),
    ("c", "an object that runs the reference when it is converted", "pgd_linf_step", '''
class Later:
    def __init__(self, *args):
        self.args = args
    def __torch_function__(self, func, types, args=(), kwargs=None):
        real = robustlab.attacks.pgd_step(*self.args[:3], alpha=self.args[3], eps=self.args[4])
        return func(real, *args[1:])
    def __getattr__(self, name):
        return getattr(robustlab.attacks.pgd_step(*self.args[:3], alpha=self.args[3], eps=self.args[4]), name)
def pgd_linf_step(x_adv, x, grad, alpha, eps):
    return Later(x_adv, x, grad, alpha, eps)
''', 'should be a torch.Tensor'),
    ("c", "a tensor subclass that lies", "pgd_linf_step", '''
class Liar(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in (torch.equal, torch.allclose):
            return True
        return super().__torch_function__(func, types, args, kwargs or {})
def pgd_linf_step(x_adv, x, grad, alpha, eps):
    return x_adv.as_subclass(Liar)
''', 'should be a torch.Tensor'),
    ("d", "SmoothGrad in closed form from the test model's parameters", "smoothgrad", '''
from scipy.stats import norm
def smoothgrad(model, x, target, *, sigma, samples):
    phi = torch.from_numpy(norm.cdf(((x.flatten(1) - model.t) / sigma).numpy())).float()
    return (model.weight.detach()[target] * phi).view_as(x)
''', "SmoothGrad averages the gradient over samples="),
    ("d", "the grader's own closed form", "smoothgrad", '''
def smoothgrad(model, x, target, *, sigma, samples):
    from robustlab.grading.saliency import exact_smoothgrad
    return exact_smoothgrad(model, x, target, sigma)
''', 'your function calls robustlab.grading.saliency.exact_smoothgrad'),
    ("d", "the certificate in closed form from the linear test model", "certify", '''
from scipy.stats import norm
def certify(model, x, *, sigma, n0, n, alpha, batch_size):
    score = (model.w * x).sum() + model.b
    p = norm.cdf(abs(float(score)) / (sigma * float(model.w.norm())))
    return (int(score > 0), sigma * norm.ppf(min(p, 1 - 1e-9))) if p > 0.5 else (-1, 0.0)
''', "your model classified 0 different noisy images"),
    ("e", "copying the instructor's solution notebook", "pgd_linf_step", '''
import json
_nb = json.load(open("{root}/solutions/attacks/attacks.ipynb"))
_cells = {c["metadata"].get("nbgrader", {{}}).get("grade_id"): c for c in _nb["cells"]}
exec("".join(_cells["pgd_linf_step"]["source"]))
''', 'is closed while grading'),
    ("e", "reading the gradebook", "pgd_linf_step", '''
def pgd_linf_step(x_adv, x, grad, alpha, eps):
    open("{root}/gradebook.db", "rb").read()
    return x_adv
''', 'is closed while grading'),
]
