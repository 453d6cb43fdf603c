using System.Net;

namespace CramCore.Remote;

/// <summary>
/// A remote tier's store: the public backend contract another tool can implement to give CramCore a
/// tier on its own servers (CramCore.Redis implements it on StackExchange.Redis for Redis, Valkey
/// and Garnet, single nodes and clusters). CramCore writes its coldest entries there, still
/// compressed and sealed (AES-256-GCM under a key that never leaves the process), packed into
/// segments of up to 256 KiB, one value per segment, under keys that start with the engine's prefix.
/// <para>
/// Two halves, as every CramCore backend has (cramnative.h, "Virtual swap"): this interface is the
/// managed <b>write half</b>, called from CramCore's writeback thread, never from a fault. The
/// <b>read half</b> is native, because a page fault can never wait for managed code (a garbage
/// collection would deadlock with it): the fault path reads an entry with one RESP
/// <c>GETRANGE key start end</c> (with <c>AUTH password</c> on connect when <see cref="Password"/>
/// is set) over TCP — over TLS when <see cref="Tls"/> is set — to <c>Nodes[NodeOf(key)]</c>. A store must therefore serve RESP2 GETRANGE on
/// those endpoints, returning the bytes written by <see cref="WriteAsync"/>.
/// </para>
/// <para>
/// Failure semantics: <see cref="WriteAsync"/> returns only once the value is durable as the store
/// promises (acknowledged, and replicated as configured); CramCore frees its local copy only then.
/// Any exception from it means "not stored": the entries stay local and writeback retries after a
/// pause. <see cref="DeleteAsync"/> and <see cref="RenewAsync"/> are best effort (a key that
/// outlives its engine expires with its lease). Every method may be called concurrently with reads
/// of other keys; none is called concurrently with another call of this interface.
/// </para>
/// </summary>
public interface ICramRemoteStore
{
    /// <summary>The endpoints the native read half connects to (IPv4), indexed by node number (at most 64).</summary>
    IReadOnlyList<IPEndPoint> Nodes { get; }

    /// <summary>Raised, on any thread, after <see cref="Nodes"/> changed (a failover promoted a replica): the engine republishes the endpoints to its read half at once; fetches in flight retry until they reach the new node.</summary>
    event EventHandler? NodesChanged;

    /// <summary>The RESP <c>AUTH</c> password of those endpoints, or null for none.</summary>
    string? Password { get; }

    /// <summary>How the native read half secures its connections to <see cref="Nodes"/>: null (the default) for plain TCP, else TLS with the server's certificate verified as this says.</summary>
    CramRemoteTls? Tls => null;

    /// <summary>Total bytes the tier may use on the store (0: no limit of its own).</summary>
    long CapacityBytes { get; }

    /// <summary>The node (an index into <see cref="Nodes"/>) that holds <paramref name="key"/>: 0 for a single node; in a cluster the master of the key's hash slot.</summary>
    int NodeOf(string key);

    /// <summary>Stores <paramref name="value"/> under <paramref name="key"/>, expiring after <paramref name="lease"/> unless renewed. Returns once durable; throws if it is not.</summary>
    Task WriteAsync(string key, ReadOnlyMemory<byte> value, TimeSpan lease, CancellationToken cancellationToken);

    /// <summary>Reads <paramref name="destination"/>.Length bytes of <paramref name="key"/>'s value from <paramref name="offset"/>; returns how many it read (fewer if the value is shorter, 0 if there is no such key).</summary>
    Task<int> ReadAsync(string key, long offset, Memory<byte> destination, CancellationToken cancellationToken);

    /// <summary>Deletes the keys (best effort: the leases expire those it misses).</summary>
    Task DeleteAsync(IReadOnlyList<string> keys, CancellationToken cancellationToken);

    /// <summary>Extends the keys' expiry to <paramref name="lease"/> from now (best effort).</summary>
    Task RenewAsync(IReadOnlyList<string> keys, TimeSpan lease, CancellationToken cancellationToken);
}

/// <summary>
/// TLS for the native read half's connections to a remote store (<see cref="ICramRemoteStore.Tls"/>):
/// TLS 1.2 or later through the system's OpenSSL (libssl.so.3), the server's certificate verified
/// against <see cref="CaFile"/> (or the system's trust store) and against <see cref="ServerName"/>
/// (or, without one, the node's IP address, which the certificate must then name).
/// </summary>
public sealed record CramRemoteTls
{
    /// <summary>The name the servers' certificates must carry (and the TLS SNI), or null to check each node's IP address instead. At most 255 bytes.</summary>
    public string? ServerName { get; init; }

    /// <summary>A PEM file of the certificate authorities to trust, or null for the system's trust store.</summary>
    public string? CaFile { get; init; }

    /// <summary>A PEM client certificate (chain) for servers that require one (Redis's <c>tls-auth-clients</c>), or null.</summary>
    public string? ClientCertificateFile { get; init; }

    /// <summary>The PEM private key of <see cref="ClientCertificateFile"/>, or null when that file holds it.</summary>
    public string? ClientKeyFile { get; init; }
}
