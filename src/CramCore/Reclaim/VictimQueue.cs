namespace CramCore.Reclaim;

/// <summary>A growable FIFO of page references (<see cref="FaultLogEntry"/> encoding).</summary>
internal sealed class VictimQueue
{
    private ulong[] _items = new ulong[4096];
    private int _head;
    private int _count;

    public int Count => _count;

    public void Enqueue(ulong entry)
    {
        if (_count == _items.Length)
        {
            var larger = new ulong[_items.Length * 2];
            for (int i = 0; i < _count; i++)
            {
                larger[i] = _items[(_head + i) & (_items.Length - 1)];
            }
            _items = larger;
            _head = 0;
        }
        _items[(_head + _count) & (_items.Length - 1)] = entry;
        _count++;
    }

    public ulong Dequeue()
    {
        ulong entry = _items[_head];
        _head = (_head + 1) & (_items.Length - 1);
        _count--;
        return entry;
    }

    public void Clear()
    {
        _head = 0;
        _count = 0;
    }

    /// <summary>Removes every entry of one region, keeping the order of the rest.</summary>
    public void RemoveRegion(uint regionId)
    {
        int n = _count;
        for (int i = 0; i < n; i++)
        {
            ulong e = Dequeue();
            if (FaultLogEntry.RegionOf(e) != regionId)
            {
                Enqueue(e);
            }
        }
    }
}
