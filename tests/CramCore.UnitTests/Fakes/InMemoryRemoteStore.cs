using System.Net;
using CramCore.Remote;

namespace CramCore.Tests.Fakes;

/// <summary>
/// The remote tier's public contract (<see cref="ICramRemoteStore"/>) implemented in memory, as a
/// third party would implement it: values with expiries on a few fake nodes, calls counted, writes
/// that fail on demand. Only the managed write half runs against it (no fault reads it: the native
/// read half speaks RESP, which the integration tests give it with a real redis-server).
/// </summary>
internal sealed class InMemoryRemoteStore(int nodes = 1, TimeProvider? time = null) : ICramRemoteStore
{
    private readonly TimeProvider _time = time ?? TimeProvider.System;
    private readonly Dictionary<string, (byte[] Value, DateTimeOffset Expires)> _values = [];
    private IPEndPoint[] _nodes = [.. Enumerable.Range(0, nodes).Select(i => new IPEndPoint(IPAddress.Loopback, 7000 + i))];

    public IReadOnlyList<IPEndPoint> Nodes => _nodes;
    public string? Password => null;
    public long CapacityBytes { get; set; }
    public event EventHandler? NodesChanged;

    /// <summary>Writes throw while set (the store unreachable).</summary>
    public bool FailWrites { get; set; }
    public int Writes { get; private set; }
    public int Renewals { get; private set; }

    /// <summary>Keys that have not expired.</summary>
    public IReadOnlyList<string> Keys
    {
        get
        {
            lock (_values)
            {
                return [.. _values.Where(kv => kv.Value.Expires > _time.GetUtcNow()).Select(kv => kv.Key)];
            }
        }
    }

    public byte[] Value(string key)
    {
        lock (_values)
        {
            return _values[key].Value;
        }
    }

    public int NodeOf(string key) => (int)((uint)key.GetHashCode(StringComparison.Ordinal) % (uint)_nodes.Length);

    public Task WriteAsync(string key, ReadOnlyMemory<byte> value, TimeSpan lease, CancellationToken cancellationToken)
    {
        if (FailWrites)
        {
            throw new IOException("the store is unreachable (fake)");
        }
        lock (_values)
        {
            _values[key] = (value.ToArray(), _time.GetUtcNow() + lease);
            Writes++;
        }
        return Task.CompletedTask;
    }

    public Task<int> ReadAsync(string key, long offset, Memory<byte> destination, CancellationToken cancellationToken)
    {
        lock (_values)
        {
            if (!_values.TryGetValue(key, out var entry) || entry.Expires <= _time.GetUtcNow() || offset >= entry.Value.Length)
            {
                return Task.FromResult(0);
            }
            int n = (int)Math.Min(destination.Length, entry.Value.Length - offset);
            entry.Value.AsSpan((int)offset, n).CopyTo(destination.Span);
            return Task.FromResult(n);
        }
    }

    public Task DeleteAsync(IReadOnlyList<string> keys, CancellationToken cancellationToken)
    {
        lock (_values)
        {
            foreach (string key in keys)
            {
                _values.Remove(key);
            }
        }
        return Task.CompletedTask;
    }

    public Task RenewAsync(IReadOnlyList<string> keys, TimeSpan lease, CancellationToken cancellationToken)
    {
        lock (_values)
        {
            foreach (string key in keys)
            {
                if (_values.TryGetValue(key, out var entry))
                {
                    _values[key] = (entry.Value, _time.GetUtcNow() + lease);
                    Renewals++;
                }
            }
        }
        return Task.CompletedTask;
    }

    /// <summary>A failover: node <paramref name="index"/> now answers at <paramref name="endPoint"/>.</summary>
    public void MoveNode(int index, IPEndPoint endPoint)
    {
        _nodes = [.. _nodes.Select((n, i) => i == index ? endPoint : n)];
        NodesChanged?.Invoke(this, EventArgs.Empty);
    }
}
