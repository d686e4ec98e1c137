"""Two-dimensional binary tasks for the lecture's hidden-unit experiments, generated from a seed.

Every task returns x_Nx2 in [-1, 1]^2 and labels y_N in {-1, +1}. For corner, stripes, circle and xor, points
closer than `margin` to the true boundary are dropped and redrawn, so the labels are exactly separable by that
boundary with a margin, and zero hinge loss is reachable by a net that can draw it. spiral is different: its
points carry Gaussian noise and no margin is kept, so the two classes may overlap and it need not be exactly
separable. The seed also picks a random rotation of the pattern (`angle`), so the tasks are not axis-aligned by
accident.

  corner   positives in one quadrant (an intersection of two half-planes).
  stripes  four alternating parallel bands: three parallel boundaries. Two tanh units can represent it (one steep
           unit for the middle boundary, one nearly linear unit for the outer two; tests/test_toy2d.py builds
           such a net by hand); whether SGD finds such a net is what the hidden-units experiment measures.
  circle   positives inside a disc holding half the area: a closed boundary.
  xor      the sign of x1 * x2 (two crossing boundaries).
  spiral   two interleaved noisy spirals.
"""
import functools

import jax
import jax.numpy as jnp

from trainnets import quick_compile

_RADIUS = (2.0 / jnp.pi) ** 0.5  # a disc of half the area of [-1, 1]^2


def _rotate(x_Nx2, angle):
  c, s = jnp.cos(angle), jnp.sin(angle)
  return x_Nx2 @ jnp.array([[c, -s], [s, c]])


def _corner(u_Nx2):
  """Signed distance-like score to the quadrant {u1 > 0, u2 > 0}: positive inside."""
  return jnp.minimum(u_Nx2[:, 0], u_Nx2[:, 1])


def _stripes(u_Nx2):
  s = u_Nx2[:, 0]
  # boundaries at s = -0.5, 0, 0.5; score is the signed distance to the nearest one, positive on (-0.5, 0) and s > 0.5
  d = jnp.min(jnp.abs(s[:, None] - jnp.array([-0.5, 0.0, 0.5])[None, :]), axis=1)
  sign = jnp.where((s > 0.5) | ((s > -0.5) & (s < 0.0)), 1.0, -1.0)
  return sign * d


def _circle(u_Nx2):
  return _RADIUS - jnp.linalg.norm(u_Nx2, axis=1)


def _xor(u_Nx2):
  return jnp.sign(u_Nx2[:, 0] * u_Nx2[:, 1]) * jnp.minimum(jnp.abs(u_Nx2[:, 0]), jnp.abs(u_Nx2[:, 1]))


SCORES = {'corner': _corner, 'stripes': _stripes, 'circle': _circle, 'xor': _xor}
TASKS = ('corner', 'stripes', 'circle', 'xor', 'spiral')


def _spiral(key, n, noise=0.04):
  """Two spirals of 1.5 turns each, one per class, with Gaussian noise."""
  k_t, k_c, k_n = jax.random.split(key, 3)
  t = jnp.sqrt(jax.random.uniform(k_t, (n,)))  # denser towards the outside, as in the classic task
  cls = jax.random.bernoulli(k_c, 0.5, (n,))
  angle = 3.0 * jnp.pi * t + jnp.where(cls, jnp.pi, 0.0)
  r = 0.95 * t
  x = jnp.stack([r * jnp.cos(angle), r * jnp.sin(angle)], axis=1) + noise * jax.random.normal(k_n, (n, 2))
  return jnp.clip(x, -1.0, 1.0), jnp.where(cls, 1.0, -1.0)


def _angle(pattern_key):
  return jax.random.uniform(pattern_key, (), minval=0.0, maxval=2 * jnp.pi)


@functools.partial(jax.jit, static_argnames=('task', 'n'))
def sample(pattern_key, points_key, task, n, margin=0.05):
  """n points of `task`: (x_Nx2 float32, y_N in {-1., +1.}).

  `pattern_key` fixes the task's rotation, `points_key` the points: a training and a test set share the first.
  """
  if task not in TASKS:
    raise ValueError(f'unknown task {task!r}; choose from {TASKS}')
  angle = _angle(pattern_key)
  if task == 'spiral':
    return _spiral_rotated(points_key, n, angle)
  return _select(_candidates(points_key, n), angle, task, n, margin)


def _candidates(points_key, n):
  """Rejection sampling with a fixed budget: 8n candidates, of which _select keeps the first n outside the margin
  band (the band holds under 25% of the square for every task at margin <= 0.05, so 8n is never short in
  practice)."""
  return jax.random.uniform(points_key, (8 * n, 2), minval=-1.0, maxval=1.0)


def _select(cand, angle, task, n, margin):
  score = SCORES[task](_rotate(cand, -angle))
  keep = jnp.abs(score) >= margin
  order = jnp.argsort(~keep, stable=True)[:n]  # kept candidates first, in draw order
  return cand[order], jnp.where(score[order] > 0, 1.0, -1.0)


def _spiral_rotated(points_key, n, angle):
  x, y = _spiral(points_key, n)
  return _rotate(x, angle), y


TRAIN, TEST, FRESH = 1, 2, 3  # independent draws of one task's pattern


def _pattern_key(seed, task):
  if task not in TASKS:
    raise ValueError(f'unknown task {task!r}; choose from {TASKS}')
  return jax.random.fold_in(jax.random.PRNGKey(seed), TASKS.index(task))


def angle(seed, task):
  """The rotation of `task`'s pattern for data seed `seed`: the pattern's coordinates are x rotated by -angle
  (for stripes, the bands' normal is (cos angle, -sin angle))."""
  return float(_angle(_pattern_key(seed, task)))


def draw(seed, task, which, n, margin=0.05):
  """n points of `task` for data seed `seed`: draw TRAIN, TEST or FRESH, each independent, same pattern."""
  pattern = _pattern_key(seed, task)
  return sample(pattern, jax.random.fold_in(pattern, which), task, n, margin)


def train_test(seed, task, num_train, num_test, margin=0.05):
  """Training and test sets of `task` for data seed `seed`: independent draws of the same pattern."""
  return draw(seed, task, TRAIN, num_train, margin), draw(seed, task, TEST, num_test, margin)


@quick_compile.jit(static_argnames=('tasks', 'num_train', 'num_test'))
def _train_tests(seed, margin, tasks, num_train, num_test):
  """[train_test(seed, task, num_train, num_test, margin) for task in tasks], the same bits, with the random
  generator's draws of all tasks made together: each task's keys and rotation, and the candidates of the tasks
  with a boundary, are one vmapped draw (integer hashing, and float conversions that are exact, so batching them
  changes no bit), which compiles into fewer loops than a draw per task. The rest stays each task's own. It runs
  once per run, and is compiled at LLVM's -O1 (quick_compile: the same bits, compiled faster)."""
  patterns = jax.vmap(lambda i: jax.random.fold_in(jax.random.PRNGKey(seed), i))(
      jnp.asarray([TASKS.index(t) for t in tasks]))
  angles = jax.vmap(_angle)(patterns)
  points = {which: jax.vmap(lambda p, which=which: jax.random.fold_in(p, which))(patterns) for which in (TRAIN, TEST)}
  bounded = [i for i, t in enumerate(tasks) if t != 'spiral']
  cands = {which: jax.vmap(lambda k, n=n: _candidates(k, n))(points[which][jnp.asarray(bounded)])
           for which, n in ((TRAIN, num_train), (TEST, num_test)) if bounded}
  drawn = []
  for i, task in enumerate(tasks):
    sets = []
    for which, n in ((TRAIN, num_train), (TEST, num_test)):
      if task == 'spiral':
        sets.append(_spiral_rotated(points[which][i], n, angles[i]))
      else:
        sets.append(_select(cands[which][bounded.index(i)], angles[i], task, n, margin))
    drawn.append(tuple(sets))
  return drawn


def train_test_many(draws):
  """{draw: train_test(*draw)} for many draws (seed, task, num_train, num_test, margin), each set of tasks and
  sizes drawn by one compiled program whose inputs are the seed and margin, instead of a program per task and size
  (a first run compiles less: docs/performance.md). The data are bit for bit those of train_test
  (tests/test_toy2d.py)."""
  by_setting = {}
  for seed, task, num_train, num_test, margin in draws:
    by_setting.setdefault((seed, num_train, num_test, margin), set()).add(task)
  out = {}
  for (seed, num_train, num_test, margin), tasks in by_setting.items():
    if unknown := sorted(tasks - set(TASKS)):
      raise ValueError(f'unknown task {unknown[0]!r}; choose from {TASKS}')
    tasks = tuple(t for t in TASKS if t in tasks)
    if -2**31 <= seed < 2**31:  # an input of the program: int32
      drawn = _train_tests(seed, margin, tasks, num_train, num_test)
    else:
      drawn = [train_test(seed, task, num_train, num_test, margin) for task in tasks]
    for task, sets in zip(tasks, drawn):
      out[(seed, task, num_train, num_test, margin)] = sets
  return out
