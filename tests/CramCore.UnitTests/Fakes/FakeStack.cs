namespace CramCore.Tests.Fakes;

/// <summary>
/// The managed layers an engine builds (Engine/EngineParts.cs) — pool, backing file, CRAM node,
/// slot table, reaper, writeback, reclaim — over a <see cref="FakeNativeEngine"/> instead of the
/// native one: everything but the fault service and its threads, so reclaim, writeback, the working
/// set and the CRAM node run in a unit test, on the test's thread, without userfaultfd.
/// </summary>
internal sealed unsafe class FakeStack : IDisposable
{
    public FakeStack(CramOptions options, Func<IPageOperations, IPageOperations>? pageOperations = null)
        : this(options, pageOperations, fileDevice: null)
    {
    }

    /// <param name="recompressor">Whether to build the recompressor (its thread is never started here; writeback uses its dictionaries and budget).</param>
    public FakeStack(CramOptions options, Func<IPageOperations, IPageOperations>? pageOperations, IBackingFileDevice? fileDevice, bool recompressor = false)
    {
        options.Validate();
        options.Resolve();
        Options = options;
        Shared->HandleDirectory = (Pool = new CompressedPool(options.PoolArenaBytes, options.CompressedPoolLimitBytes, false, Engine)).HandleDirectory;
        if (options.BackingFile is not null)
        {
            File = BackingFile.Open(options.BackingFile, options.KeepBackingFile, options.BackingFileLimitBytes, fileDevice);
            Shared->BackingFd = File.Descriptor;
            Shared->BackingDirect = File.Direct ? 1u : 0u;
        }
        if (options.RemoteStore is not null)
        {
            Remote = new RemoteSegments(options.RemoteStore, options.RemoteKeyPrefix!, options.RemoteEncryption ? RemoteKey : null, options.RemoteLease,
                options.RemoteReadTimeout, options.TimeProvider, (i, endPoint) => PublishedNodes[i] = endPoint);
            Engine.RemoteReader = Remote.TryReadStored;
        }
        Node = options.CramDevice is null ? null : new CramNode(Engine, Shared, options, Events);
        Slots = new SlotTable(Shared, Pool, File, Remote, Node);
        Reaper = new Reaper(Engine, Slots);
        Recompressor = recompressor ? new Recompressor(Engine, Shared, Slots, Maintenance, options.RecompressionCpuShare, options.TimeProvider, Engine.Regions) : null;
        Writeback = Slots.Tier is null ? null : new Writeback(Engine, Slots, options, Events, Maintenance, Recompressor);
        IPageOperations operations = new NativePageOperations(Engine, Slots);
        Reclaimer = new Reclaimer(Engine, Shared, Engine.Regions, Slots, pageOperations?.Invoke(operations) ?? operations, options, Reaper, Writeback, Events, Maintenance);
    }

    public CramOptions Options { get; }
    public FakeNativeEngine Engine { get; } = new();
    public NativeShared* Shared => Engine.Shared;
    public TierEventChannel Events { get; } = new();
    /// <summary>Lock 3, as EngineParts makes it: reclaim's and writeback's.</summary>
    public Lock Maintenance { get; } = new();
    public CompressedPool Pool { get; }
    public BackingFile? File { get; }
    /// <summary>The remote tier's segments (with <see cref="CramOptions.RemoteStore"/>), sealed under <see cref="RemoteKey"/>.</summary>
    public RemoteSegments? Remote { get; }
    public byte[] RemoteKey { get; } = [.. Enumerable.Range(1, 32).Select(i => (byte)i)];
    /// <summary>The endpoints the remote tier gave its (here absent) native read half, by node.</summary>
    public Dictionary<int, System.Net.IPEndPoint> PublishedNodes { get; } = [];
    public CramNode? Node { get; }
    public SlotTable Slots { get; }
    public Reaper Reaper { get; }
    public Writeback? Writeback { get; }
    public Recompressor? Recompressor { get; }
    public Reclaimer Reclaimer { get; }

    /// <summary>The events the layers posted so far.</summary>
    public List<CramTierEventKind> TakeEvents()
    {
        var kinds = new List<CramTierEventKind>();
        while (Events.TryTake(out CramTierEventArgs? e))
        {
            kinds.Add(e!.Kind);
        }
        return kinds;
    }

    public void Dispose()
    {
        Reclaimer.Dispose();
        Slots.Dispose();
        Node?.Dispose();
        Pool.Dispose();
        Writeback?.Dispose();
        Recompressor?.Dispose();
        File?.Dispose();
        Remote?.Dispose();
        Engine.Dispose();
    }
}
