"""L-BFGS through ``scipy.optimize.minimize(method="L-BFGS-B")``, for small nets and full batches.

The trained parameters (learnable, lr_mult != 0) are flattened into one float64 vector theta;
the objective is the net's loss over all the given examples plus the L2 term:

    f(theta) = sum_b (n_b / n) * loss(batch_b; theta) + weight_decay / 2 * sum_p decay_mult_p * ||w_p||^2
    grad f   = sum_b (n_b / n) * dloss_b/dtheta      + weight_decay * decay_mult_p * w_p

(the loss layers average over their batch, so the weights n_b / n make f the mean over all n
examples). L-BFGS keeps the last ``history`` pairs (s, y) = (theta_k+1 - theta_k, grad_k+1 - grad_k)
and takes quasi-Newton steps found by a line search; there is no learning rate, so lr_mult only
matters as 0 (frozen). Gradient clipping does not apply.
"""
import numpy as np


class LBFGS:
    name = "lbfgs"

    def __init__(self, net, weight_decay=0.0, history=10, max_iter=100, tol=1e-6):
        self.net = net
        self.weight_decay = float(weight_decay)
        self.history = int(history)
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.params = {n: p for n, p in net.params.items() if p.trained}
        if not self.params:
            raise ValueError("L-BFGS: the net has no trained parameters (all frozen or not learnable)")
        self.iter = 0
        self.evaluations = 0

    def get_vector(self):
        return np.concatenate([p.data.ravel().astype(np.float64) for p in self.params.values()])

    def set_vector(self, theta):
        i = 0
        for p in self.params.values():
            p.data[...] = theta[i:i + p.data.size].reshape(p.shape)
            i += p.data.size

    def objective(self, theta, batches):
        """(f, grad f) at theta over ``batches`` (a list of input dicts)."""
        self.set_vector(theta)
        sizes = [len(next(iter(b.values()))) for b in batches]
        total = float(sum(sizes))
        f = 0.0
        grad = np.zeros_like(theta)
        for batch, n in zip(batches, sizes):
            self.net.forward(batch)
            loss = self.net.loss()
            if not np.isfinite(loss):
                raise FloatingPointError(f"L-BFGS: the loss is {loss} at iteration {self.iter}")
            self.net.backward()
            f += loss * n / total
            grad += np.concatenate([p.diff.ravel().astype(np.float64) for p in self.params.values()]) * (n / total)
        i = 0
        for p in self.params.values():
            decay = self.weight_decay * p.decay_mult
            if decay:
                w = theta[i:i + p.data.size]
                f += 0.5 * decay * float(w @ w)
                grad[i:i + p.data.size] += decay * w
            i += p.data.size
        self.evaluations += 1
        return f, grad

    def minimize(self, inputs, callback=None):
        """Minimise over ``inputs`` (an input dict, or a list of them for a data set in chunks).

        ``callback(iteration, f)`` runs after each L-BFGS iteration. Leaves the best parameters in
        the net and returns scipy's OptimizeResult."""
        from scipy.optimize import minimize

        batches = [inputs] if isinstance(inputs, dict) else list(inputs)
        if not batches:
            raise ValueError("L-BFGS: no data")

        def on_iteration(intermediate_result):
            self.iter += 1
            if callback is not None:
                callback(self.iter, float(intermediate_result.fun))

        result = minimize(self.objective, self.get_vector(), args=(batches,), jac=True, method="L-BFGS-B",
                          callback=on_iteration,
                          options={"maxiter": self.max_iter, "maxcor": self.history, "gtol": self.tol,
                                   "ftol": 1e-12})
        self.set_vector(result.x)
        return result

    def config(self):
        return {"type": self.name, "weight_decay": self.weight_decay, "history": self.history,
                "max_iter": self.max_iter, "tol": self.tol}
