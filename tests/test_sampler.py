"""trainnets/data/sampler.py, the one input order: epochs, resumption, each process's share and padded evaluation."""
import numpy as np
import pytest

from trainnets import tf_host
from trainnets.data import sampler


@pytest.mark.parametrize('order', sampler.ORDERS)
def test_an_epoch_is_a_permutation_in_whole_batches_fixed_by_seed_and_epoch(order):
  rows, positions = sampler.train_rows(103, 8, seed=3, epoch=1, order=order)
  assert rows.shape == positions.shape == (12, 8), 'the partial last batch is dropped'
  assert len(set(rows.ravel())) == 96 and set(rows.ravel()) <= set(range(103))
  np.testing.assert_array_equal(positions.ravel(), np.arange(96))
  again, _ = sampler.train_rows(103, 8, seed=3, epoch=1, order=order)
  np.testing.assert_array_equal(rows, again)
  other, _ = sampler.train_rows(103, 8, seed=3, epoch=2, order=order)
  assert not np.array_equal(rows, other), 'each epoch reshuffles'
  resumed, at = sampler.train_rows(103, 8, seed=3, epoch=1, skip_batches=5, order=order)
  np.testing.assert_array_equal(resumed, rows[5:])
  np.testing.assert_array_equal(at, positions[5:])


def test_indices_are_ordered_as_a_count_of_the_same_size():
  kept = np.array([7, 3, 9, 11, 20, 4])
  rows, _ = sampler.train_rows(kept, 2, seed=0, epoch=0)
  plain, _ = sampler.train_rows(6, 2, seed=0, epoch=0)
  np.testing.assert_array_equal(rows, kept[plain])


def test_the_tf_data_order_is_tf_datas_shuffle_of_the_elements_themselves():
  """tf.data's shuffle order depends on the seed and the count, not on the elements: the order Fashion-MNIST's
  runs were made with (a shuffle of the images) is the sampler's permutation of their indices."""
  t = tf_host.tf()
  es = sampler.epoch_seed(5, 2)
  shuffled = t.data.Dataset.from_tensor_slices(np.arange(50) * 7).shuffle(50, seed=es, reshuffle_each_iteration=False)
  np.testing.assert_array_equal(np.fromiter(shuffled.as_numpy_iterator(), np.int64) // 7,
                                sampler.permutation(50, 5, 2, 'tf.data'))
  with pytest.raises(ValueError, match='not one of'):
    sampler.permutation(5, 0, 0, 'random')


def test_the_processes_share_every_global_batch_in_contiguous_blocks():
  rows, _ = sampler.train_rows(64, 16, seed=1, epoch=0)
  parts = [rows[:, sampler.local(16, (p, 4))] for p in range(4)]
  np.testing.assert_array_equal(np.concatenate(parts, axis=1), rows)


def test_evaluation_counts_every_example_once():
  rows, mask = sampler.eval_rows(np.array([4, 5, 6, 7, 8]), 4)
  np.testing.assert_array_equal(rows, [[4, 5, 6, 7], [8, 4, 4, 4]])
  np.testing.assert_array_equal(mask, [[1, 1, 1, 1], [1, 0, 0, 0]])
