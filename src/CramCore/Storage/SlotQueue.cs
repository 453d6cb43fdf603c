namespace CramCore.Storage;

/// <summary>
/// A growable FIFO of slot ids: the pool's store order, oldest first, for writeback. Used only on
/// the maintenance path (the reclaimer's pass lock), so it needs no lock of its own.
/// </summary>
internal sealed class SlotQueue
{
    private uint[] _items = new uint[4096];
    private int _head;
    private int _count;

    public int Count => Volatile.Read(ref _count);

    public void Enqueue(uint id)
    {
        if (_count == _items.Length)
        {
            var larger = new uint[_items.Length * 2];
            for (int i = 0; i < _count; i++)
            {
                larger[i] = _items[(_head + i) & (_items.Length - 1)];
            }
            _items = larger;
            _head = 0;
        }
        _items[(_head + _count) & (_items.Length - 1)] = id;
        _count++;
    }

    public bool TryDequeue(out uint id)
    {
        if (_count == 0)
        {
            id = 0;
            return false;
        }
        id = _items[_head];
        _head = (_head + 1) & (_items.Length - 1);
        _count--;
        return true;
    }

    /// <summary>Keeps only the ids <paramref name="keep"/> accepts, in order (drops entries of slots that left the pool).</summary>
    public void Retain(Func<uint, bool> keep)
    {
        int n = _count, kept = 0;
        for (int i = 0; i < n; i++)
        {
            uint id = _items[(_head + i) & (_items.Length - 1)];
            if (keep(id))
            {
                _items[(_head + kept++) & (_items.Length - 1)] = id;
            }
        }
        _count = kept;
    }
}
