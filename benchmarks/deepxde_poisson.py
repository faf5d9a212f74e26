"""DeepXDE's own error on its 1-D Poisson example, with the published setup,
for a few seeds (the docs' PDE gallery quotes keras_deriv's on the same
problem).

    DDE_BACKEND=tensorflow python benchmarks/deepxde_poisson.py --seeds 0,1,2

Needs DeepXDE, which is not a dependency of keras_deriv: on its TensorFlow
backend `pip install deepxde "tf-keras~=2.21.0" "tensorflow-probability>=0.25"`
(tf-keras of the installed TensorFlow's release; or `pip install -e .[bench]`).

The example is DeepXDE's `examples/pinn_forward/Poisson_Dirichlet_1d.py`:
-u'' = pi^2 sin(pi x) on [-1, 1], u(-1) = u(1) = 0, exact u = sin(pi x); a
[1] + [50] * 3 + [1] tanh network, Glorot uniform, Adam lr 1e-3, 10,000
iterations on 16 domain + 2 boundary points (one full batch per iteration).
The error is the one gallery.md quotes for keras_deriv: L2 relative error
of u on a 101-point grid of [-1, 1] against sin(pi x). DeepXDE's own metric
("l2 relative error" on its 100 test points) is printed beside it. Seeds go
through `dde.config.set_random_seed` (Python, NumPy and the backend).

Two initialisations per seed. On TensorFlow >= 2.16 `tf.keras` is Keras 3,
and DeepXDE 1.15 builds its "Glorot uniform" once, at import
(`deepxde/nn/initializers.py`, `INITIALIZER_DICT`): a Keras 3 initializer
made without a seed fixes one at construction (`make_default_seed`, from
Python's `random` at that moment), so every call returns the same values.
Hence, as shipped, all layers of one shape get the same kernel (here the
two 50 x 50 hidden layers are equal) and `set_random_seed` does not change
the initial weights (three seeds in one process train the same network).

- "as shipped": DeepXDE's own initializer, rebuilt after the seed is set
  (`initializer_dict_tf()`), as a fresh process whose Python `random` was
  seeded before `import deepxde` would build it: the shared kernel stays,
  but the seed now picks it.
- "independent": `keras.initializers.GlorotUniform(seed=
  keras.random.SeedGenerator(seed))` passed as the initializer (DeepXDE
  takes a callable), a new draw for every layer, as Glorot initialisation
  means and as DeepXDE's other backends do.
"""

import argparse
import os
import time

os.environ.setdefault("DDE_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import deepxde as dde  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

VARIANTS = ("as shipped", "independent")


def exact(x):
    return np.sin(np.pi * x)


def initializer(variant, seed):
    if variant == "as shipped":
        dde.nn.initializers.INITIALIZER_DICT = dde.nn.initializers.initializer_dict_tf()
        return "Glorot uniform"
    return keras.initializers.GlorotUniform(seed=keras.random.SeedGenerator(seed))


def train(seed, variant, iterations):
    """Trains the example once; returns (grid error, DeepXDE's test metric,
    whether the two hidden 50 x 50 kernels started equal)."""
    dde.config.set_random_seed(seed)
    sin = dde.backend.sin  # the backend's sin (tf.sin on TensorFlow)

    def pde(x, y):
        dy_xx = dde.grad.hessian(y, x)
        return -dy_xx - np.pi**2 * sin(np.pi * x)

    geom = dde.geometry.Interval(-1, 1)
    bc = dde.icbc.DirichletBC(geom, exact, lambda _, on_boundary: on_boundary)
    data = dde.data.PDE(geom, pde, bc, 16, 2, solution=exact, num_test=100)
    net = dde.nn.FNN([1] + [50] * 3 + [1], "tanh", initializer(variant, seed))
    net(np.zeros((1, 1), "float32"))  # build, to look at the initial kernels
    shared = bool(np.array_equal(net.denses[1].kernel, net.denses[2].kernel))
    model = dde.Model(data, net)
    model.compile("adam", lr=0.001, metrics=["l2 relative error"])
    _, state = model.train(iterations=iterations, display_every=iterations)
    grid = np.linspace(-1, 1, 101, dtype="float32").reshape(-1, 1)
    u = np.asarray(model.predict(grid))[:, 0]
    truth = exact(grid[:, 0])
    error = float(np.linalg.norm(u - truth) / np.linalg.norm(truth))
    return error, float(np.ravel(state.best_metrics)[0]), shared


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--iterations", type=int, default=10_000)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    if dde.backend.backend_name != "tensorflow":
        parser.error("run with DDE_BACKEND=tensorflow (the initializers are TF's)")
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if set(variants) - set(VARIANTS):
        parser.error(f"--variants: choose from {VARIANTS}")
    results = []
    for seed in seeds:
        for variant in variants:
            start = time.perf_counter()
            error, metric, shared = train(seed, variant, args.iterations)
            seconds = time.perf_counter() - start
            results.append((seed, variant, error, metric, shared, seconds))
    print(
        f"\nDeepXDE {dde.__version__}, backend {dde.backend.backend_name}, "
        f"keras {keras.__version__}, {args.iterations} iterations; error: L2 "
        "relative on the 101-point grid; metric: DeepXDE's on its 100 test points"
    )
    print(
        f"{'seed':>4}  {'initialisation':<14}{'hidden kernels':>16}{'error':>10}"
        f"{'metric':>10}{'s':>6}"
    )
    for seed, variant, error, metric, shared, seconds in results:
        kernels = "equal" if shared else "distinct"
        print(
            f"{seed:>4}  {variant:<14}{kernels:>16}{error:10.2e}{metric:10.2e}"
            f"{seconds:6.0f}"
        )
    for variant in variants:
        errors = [r[2] for r in results if r[1] == variant]
        print(
            f"{variant}: median {np.median(errors):.2e}, min {min(errors):.2e}, "
            f"max {max(errors):.2e} over {len(errors)} seeds"
        )


if __name__ == "__main__":
    main()
