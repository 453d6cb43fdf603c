namespace CramCore;

/// <summary>A growable stack of ids that were freed and can be handed out again. Not thread-safe: callers hold their lock.</summary>
internal sealed class IdStack<T>(int capacity) where T : unmanaged
{
    private T[] _items = new T[capacity];
    private int _count;

    public void Push(T id)
    {
        if (_count == _items.Length)
        {
            Array.Resize(ref _items, _items.Length * 2);
        }
        _items[_count++] = id;
    }

    public bool TryPop(out T id)
    {
        if (_count == 0)
        {
            id = default;
            return false;
        }
        id = _items[--_count];
        return true;
    }
}
