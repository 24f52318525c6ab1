"""``import pdlab.kernels`` must not import numba, and the torch backend must work where numba
cannot even be imported (a broken numba/numpy pairing must not take the engine down)."""

import subprocess
import sys
import textwrap


def run(code):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True)


def test_import_does_not_load_numba():
    r = run("""
        import sys, pdlab.kernels
        assert 'numba' not in sys.modules, 'numba imported eagerly'
        print('ok')
    """)
    assert r.returncode == 0, r.stderr


def test_torch_backend_works_without_numba():
    r = run("""
        import sys
        class Block:                      # make `import numba` fail, as on a broken install
            def find_spec(self, name, path=None, target=None):
                if name == 'numba' or name.startswith('numba.'):
                    raise ImportError('numba is broken here')
        sys.meta_path.insert(0, Block())
        from pdlab.kernels import get_backend, default_backend
        from pdlab.kernels.paged import make_case
        c = make_case([9, 3], num_kv_heads=1, group=4)
        out = get_backend('torch').decode_attention(c.q_decode, c.k_cache, c.v_cache, c.block_tables, c.seq_lens, c.scale)
        assert out.shape == c.q_decode.shape
        import os
        os.environ.pop('NUMBA_ENABLE_CUDASIM', None)
        assert default_backend() == 'torch'
        try:
            get_backend('numba')
        except ImportError:
            print('ok')
    """)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def test_reserve_wrappers_grows_the_cache_without_importing_numba():
    r = run("""
        import sys
        from pdlab import kernels
        kernels.reserve_wrappers(40)
        kernels.reserve_wrappers(12)          # reservations only grow
        assert 'numba' not in sys.modules, 'reserve_wrappers imported numba'
        from pdlab.kernels import _numba as nb
        assert nb.wrap_capacity() == 40, nb.wrap_capacity()
        nb._WRAP_CACHE_MAX = 64               # the older way of asking still counts
        assert nb.wrap_capacity() == 64
        print('ok')
    """)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr
