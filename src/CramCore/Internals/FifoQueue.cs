namespace CramCore.Internals;

/// <summary>
/// A growable FIFO ring of small values: reclaim's victim queue (page references) and writeback's
/// pool store order (slot ids). It grows by doubling and, as it empties, shrinks by halving (below an
/// eighth full), so its memory follows its count. Not thread-safe: each user holds the maintenance lock.
/// </summary>
internal sealed class FifoQueue<T> where T : unmanaged
{
    private T[] _items = new T[MinimumCapacity];
    private int _head;
    private int _count;

    public int Count => Volatile.Read(ref _count);

    /// <summary>Bytes of the ring (its capacity, not its count): for the memory limit's metadata.</summary>
    public long CapacityBytes => (long)Volatile.Read(ref _items).Length * System.Runtime.CompilerServices.Unsafe.SizeOf<T>();

    public void Enqueue(T item)
    {
        GrowIfFull();
        _items[(_head + _count) & (_items.Length - 1)] = item;
        _count++;
    }

    /// <summary>Puts <paramref name="item"/> back at the front: the next <see cref="TryDequeue"/> returns it.</summary>
    public void EnqueueFront(T item)
    {
        GrowIfFull();
        _head = (_head - 1) & (_items.Length - 1);
        _items[_head] = item;
        _count++;
    }

    private void GrowIfFull()
    {
        if (_count == _items.Length)
        {
            Resize(_items.Length * 2);
        }
    }

    public bool TryDequeue(out T item)
    {
        if (_count == 0)
        {
            item = default;
            return false;
        }
        item = _items[_head];
        _head = (_head + 1) & (_items.Length - 1);
        _count--;
        if (_count < _items.Length / 8 && _items.Length > MinimumCapacity)
        {
            Resize(_items.Length / 2); // metadata follows what it describes: a queue that emptied gives its ring back, halving at most once per half of its items dequeued
        }
        return true;
    }

    private const int MinimumCapacity = 4096;

    private void Resize(int capacity)
    {
        var items = new T[capacity];
        for (int i = 0; i < _count; i++)
        {
            items[i] = _items[(_head + i) & (_items.Length - 1)];
        }
        _items = items;
        _head = 0;
    }

    public void Clear()
    {
        _head = 0;
        _count = 0;
    }

    /// <summary>Visits the items front to back (oldest first) until <paramref name="visit"/> returns false.</summary>
    public void Visit(Func<T, bool> visit)
    {
        for (int i = 0; i < _count; i++)
        {
            if (!visit(_items[(_head + i) & (_items.Length - 1)]))
            {
                return;
            }
        }
    }

    /// <summary>Keeps only the items <paramref name="keep"/> accepts, in order.</summary>
    public void Retain(Func<T, bool> keep)
    {
        int n = _count, kept = 0;
        for (int i = 0; i < n; i++)
        {
            T item = _items[(_head + i) & (_items.Length - 1)];
            if (keep(item))
            {
                _items[(_head + kept++) & (_items.Length - 1)] = item;
            }
        }
        _count = kept;
    }
}
