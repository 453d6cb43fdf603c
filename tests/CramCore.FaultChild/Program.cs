using CramCore;

// Scenarios a test must watch from outside, because the process is meant to die:
//   corrupt-pool  a stored copy in the pool has one byte flipped, then its page is read
//   corrupt-file  the same for a copy written back to the backing file
//   truncate-file the backing file loses its data (reads come back short: a read error)
//   dropped-write the disk acknowledges writeback's writes but stores zeros (a lying disk)
//   remote-down   the page's copy is on a remote store (redis-server at 127.0.0.1:PORT, given in place
//                 of DIRECTORY), which is shut down before the read: the fetch fails after its timeout
//   remote-tampered  a byte of the page's sealed extent is changed on the store (SETRANGE)
// Each prints "reading" before the fatal read and "read returned" if it ever comes back.
// A third argument, faulting-thread, runs the engine with CramFaultService.FaultingThread: the bad
// page is then met in CramCore's SIGBUS handler, which must pass the poisoned page's SIGBUS on.
if (args.Length is not (2 or 3) || (args.Length == 3 && args[2] != "faulting-thread"))
{
    Console.Error.WriteLine("usage: CramCore.FaultChild corrupt-pool|corrupt-file|truncate-file|dropped-write DIRECTORY [faulting-thread]");
    Console.Error.WriteLine("       CramCore.FaultChild remote-down|remote-tampered PORT [faulting-thread]");
    return 2;
}
string scenario = args[0];
bool remote = scenario.StartsWith("remote-", StringComparison.Ordinal);
using CramCore.Redis.RedisRemoteStore? store = remote ? CramCore.Redis.RedisRemoteStore.Connect($"127.0.0.1:{args[1]}") : null;
string file = Path.Combine(args[1], "swap");
bool toFile = scenario != "corrupt-pool" && !remote;
const int Pages = 64;
const int P = 4096;

using var engine = CramEngine.CreateWithHooks(new CramOptions
{
    BackingFile = toFile ? file : null,
    KeepBackingFile = true,
    RemoteStore = store,
    RemoteReadTimeout = TimeSpan.FromSeconds(1),
    CompressedPoolLimitBytes = toFile || remote ? 1 << 20 : 0,
    PoolArenaBytes = 1 << 20,
    FaultService = args.Length == 3 ? CramFaultService.FaultingThread : CramFaultService.ServiceThread,
}, fileDevice: real => scenario == "dropped-write" ? new ZeroWritingDevice(real) : real);
using var region = engine.CreateRegion(Pages * P);
unsafe
{
    for (int i = 0; i < Pages; i++)
    {
        var words = (long*)(region.Pointer + (long)i * P);
        for (int w = 0; w < P / 8; w++)
        {
            words[w] = (i * 31 + w / 16) % 97; // compresses well, never same-filled
        }
    }
    region.Reclaim(region.Length);
    if (toFile || remote)
    {
        engine.Maintenance.WriteBack(long.MaxValue);
    }
    ulong slotId = PageTableEntry.Slot(PageTableEntry.Load(region.PageTableEntries + 7));
    NativeSlot* slot = engine.Parts.Slots.Get(slotId);
    if (slot->Backend != (toFile ? SlotBackend.File : remote ? SlotBackend.Remote : SlotBackend.Pool))
    {
        Console.Error.WriteLine($"setup: page 7 is in {slot->Backend}");
        return 3;
    }
    switch (scenario)
    {
        case "corrupt-pool":
            ((byte*)engine.Parts.Pool.AddressOf((uint)slot->Location))[slot->Length / 2] ^= 0x40;
            break;
        case "corrupt-file":
            using (var stream = new FileStream(file, FileMode.Open, FileAccess.ReadWrite))
            {
                stream.Position = (long)slot->Location + slot->Length / 2;
                int b = stream.ReadByte();
                stream.Position--;
                stream.WriteByte((byte)(b ^ 0x40));
            }
            break;
        case "truncate-file":
            using (var stream = new FileStream(file, FileMode.Open, FileAccess.ReadWrite))
            {
                stream.SetLength(0);
            }
            break;
        case "dropped-write":
            break; // every extent on disk is zeros already
        case "remote-down":
            Console.Out.WriteLine($"page 3 reads {region.Pointer[3L * P + 8]}");
            Resp(int.Parse(args[1]), "SHUTDOWN", "NOSAVE");
            break;
        case "remote-tampered":
            Resp(int.Parse(args[1]), "SETRANGE", engine.Parts.Remote!.KeyOf(RemoteLocation.Segment(slot->Location)),
                (RemoteLocation.Offset(slot->Location) + slot->Length / 2).ToString(), "\u0001\u0002");
            break;

        default:
            Console.Error.WriteLine($"unknown scenario {scenario}");
            return 2;
    }
    // Another page reads back fine first: only the damaged one fails.
    if (scenario is not ("truncate-file" or "dropped-write" or "remote-down"))
    {
        Console.Out.WriteLine($"page 3 reads {region.Pointer[3L * P + 8]}");
    }
    Console.Out.WriteLine("reading");
    Console.Out.Flush();
    byte value = region.Pointer[7L * P + 100];
    Console.Out.WriteLine($"read returned {value}");
    return 0;
}

/// <summary>Sends one command to a RESP server on loopback (the test's own: shut it down, damage a value) and reads one line of reply.</summary>
static void Resp(int port, params string[] command)
{
    using var client = new System.Net.Sockets.TcpClient("127.0.0.1", port);
    using System.Net.Sockets.NetworkStream stream = client.GetStream();
    var request = new System.Text.StringBuilder($"*{command.Length}\r\n");
    foreach (string part in command)
    {
        request.Append($"${System.Text.Encoding.UTF8.GetByteCount(part)}\r\n{part}\r\n");
    }
    stream.Write(System.Text.Encoding.UTF8.GetBytes(request.ToString()));
    stream.ReadByte(); // a reply, or the connection closing (SHUTDOWN)
}

/// <summary>A disk that acknowledges every write but stores zeros of the same length in its place.</summary>
internal sealed unsafe class ZeroWritingDevice(IBackingFileDevice real) : IBackingFileDevice
{
    public Errno Write(int fd, byte* data, ulong length, ulong offset)
    {
        byte* zeros = (byte*)System.Runtime.InteropServices.NativeMemory.AlignedAlloc((nuint)length, 4096);
        try
        {
            new Span<byte>(zeros, (int)length).Clear();
            return real.Write(fd, zeros, length, offset);
        }
        finally
        {
            System.Runtime.InteropServices.NativeMemory.AlignedFree(zeros);
        }
    }

    public Errno Read(int fd, byte* data, ulong length, ulong offset) => real.Read(fd, data, length, offset);

    public void Discard(int fd, ulong offset, ulong length) => real.Discard(fd, offset, length);
}
