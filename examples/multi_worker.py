"""Two-worker training of a model with derivative outputs, on one machine.

Start both workers (two processes; each waits for the other):

    python examples/multi_worker.py 0 & python examples/multi_worker.py 1; wait

Each process is one worker of a TensorFlow `MultiWorkerMirroredStrategy`
cluster described by `TF_CONFIG`: here two workers on localhost ports 12345
and 12346 (`--ports` picks others). On real machines, list their addresses
under `cluster` and start one process per machine with its own index. Both
workers print the same losses and weights: they train one model together,
each on half of every global batch. Worker 0 (the chief) saves the model.

    python examples/multi_worker.py --one-device

trains the same model on the same global batches in one process, without a
cluster: it prints the same numbers, to float32 round-off.

Keras 3's `fit` fails under `MultiWorkerMirroredStrategy` with two or more
workers, whatever the model (keras-team/keras#20585), so this trains with
a custom loop: `strategy.run` of one step per global batch.
"""

import argparse
import json
import os

os.environ["KERAS_BACKEND"] = "tensorflow"  # tf.distribute is TensorFlow's

GLOBAL_BATCH = 64


def build_model():
    """y, dy/dx and d2y/dx2 of a 1 -> 32 x 2 tanh -> 1 network, as a dict."""
    import keras

    from keras_deriv import DerivativeModel

    seeded = keras.initializers.GlorotUniform
    net = keras.Sequential(
        [
            keras.Input((1,)),
            keras.layers.Dense(32, "tanh", kernel_initializer=seeded(1)),
            keras.layers.Dense(32, "tanh", kernel_initializer=seeded(2)),
            keras.layers.Dense(1, kernel_initializer=seeded(3)),
        ]
    )
    inputs = keras.Input((1,))
    layer = DerivativeModel(net, order=2)
    outputs = dict(zip(layer.output_keys, layer(inputs), strict=True))
    return keras.Model(inputs, outputs)


def training_data():
    """sin(pi x) and its second derivative on [-1, 1], global batches."""
    import numpy as np
    import tensorflow as tf

    x = np.linspace(-1, 1, 256, dtype="float32").reshape(-1, 1)
    y = np.sin(np.pi * x)
    d2y = (-(np.pi**2) * np.sin(np.pi * x))[..., None]  # (n, 1, 1), as d2y
    dataset = tf.data.Dataset.from_tensor_slices((x, y, d2y)).batch(GLOBAL_BATCH)
    options = tf.data.Options()
    # The points are in memory, not in files: each worker takes its share
    # of every global batch.
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    return dataset.with_options(options)


def train(strategy, epochs):
    """Trains `build_model()` under `strategy`; returns it, the losses and
    the sizes of this worker's per-replica batches, one list per step of the
    first epoch (32 on each of two workers, 64 on one device)."""
    import keras
    import tensorflow as tf

    with strategy.scope():
        model = build_model()
        optimizer = keras.optimizers.Adam(1e-2)
        optimizer.build(model.trainable_variables)

    def step(x, y, d2y):
        with tf.GradientTape() as tape:
            out = model(x, training=True)
            # A Sobolev loss: the values and the second derivatives (which
            # are pi**2 larger, hence the weight).
            per_point = tf.reduce_mean((out["y"] - y) ** 2, axis=1)
            per_point += 0.01 * tf.reduce_mean((out["d2y"] - d2y) ** 2, axis=(1, 2))
            # The mean over the global batch, not over this replica's part:
            # the optimizer sums the replicas' gradients.
            loss = tf.nn.compute_average_loss(per_point, global_batch_size=GLOBAL_BATCH)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    @tf.function
    def train_step(batch):
        losses = strategy.run(step, args=batch)
        return strategy.reduce("SUM", losses, axis=None)

    dataset = strategy.experimental_distribute_dataset(training_data())
    epoch_losses = []
    batch_sizes = []  # per step of the first epoch: this worker's replicas'
    for epoch in range(epochs):
        steps = []
        for batch in dataset:
            if epoch == 0:
                local = strategy.experimental_local_results(batch[0])
                batch_sizes.append([int(tf.shape(x)[0]) for x in local])
            steps.append(float(train_step(batch)))
        epoch_losses.append(sum(steps) / len(steps))
    return model, epoch_losses, batch_sizes


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("index", type=int, nargs="?", help="this worker: 0 or 1")
    parser.add_argument("--one-device", action="store_true", help="no cluster")
    parser.add_argument("--ports", type=int, nargs=2, default=(12345, 12346))
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--save", default="multi_worker.keras")
    parser.add_argument("--weights", help="also write the final weights (.npz)")
    args = parser.parse_args()
    if args.one_device == (args.index is not None):
        parser.error("give a worker index (0 or 1), or --one-device")

    if not args.one_device:
        # Set before TensorFlow starts its runtime: the strategy reads it.
        os.environ["TF_CONFIG"] = json.dumps(
            {
                "cluster": {"worker": [f"localhost:{p}" for p in args.ports]},
                "task": {"type": "worker", "index": args.index},
            }
        )
    import numpy as np
    import tensorflow as tf

    if args.one_device:
        strategy = tf.distribute.get_strategy()  # the default: no distribution
    else:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    model, losses, batch_sizes = train(strategy, args.epochs)

    weights = model.get_weights()
    name = "one device" if args.one_device else f"worker {args.index}"
    # Machine-readable: 2 replicas and batches of 32 when the cluster formed
    # (a worker that trained alone would report 1 and 64).
    print(
        f"{name}: replicas_in_sync={strategy.num_replicas_in_sync} "
        f"per_replica_batches={json.dumps(batch_sizes)}",
        flush=True,
    )
    print(
        f"{name}: loss {losses[0]:.6f} -> {losses[-1]:.6f}, "
        f"sum of |weights| {sum(float(np.abs(w).sum()) for w in weights):.6f}",
        flush=True,
    )
    if args.weights:
        np.savez(args.weights, *weights)
    if not args.index:  # the chief, or the single device
        model.save(args.save)
        print(f"{name}: saved {args.save}", flush=True)


if __name__ == "__main__":
    main()
