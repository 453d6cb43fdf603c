namespace CramCore.Tests;

/// <summary>
/// Members that touch a region's memory from the caller's thread, racing a dispose of the region or
/// of its engine on another thread: each call completes or throws <see cref="ObjectDisposedException"/>
/// — never a crash (issue 24: Advise(DontNeed) racing Dispose hit an access violation in 2 of 2 runs).
/// A dispose waits for a stream copy in flight (ReadFrom, WriteTo and their async forms).
/// </summary>
[Trait("Category", TestCategory.Userfaultfd)]
public sealed unsafe class DisposeRaceTests
{
    private const int P = 4096;
    private const int Rounds = 20;

    public static TheoryData<string> Members =>
        ["Advise(DontNeed)", "Advise(Cold)", "Advise(WillNeed)", "MakeResident", "Reclaim", "region.GetStats", "ReadFrom", "ReadFromAsync", "WriteTo", "WriteToAsync",
         "AsSpan", "AsMemory", "GetStats", "CompactPool", "ResidentLimitBytes", "CreateRegion"];

    private static readonly byte[] s_source = new byte[64 * P];

    private static void Call(CramEngine engine, CramRegion region, string member)
    {
        switch (member)
        {
            case "Reclaim":
                region.Reclaim(16 * P);
                break;
            case "region.GetStats":
                region.GetStats();
                break;
            case "GetStats":
                engine.GetStats();
                break;
            case "CompactPool":
                engine.CompactPool();
                break;
            case "ResidentLimitBytes":
                engine.ResidentLimitBytes = engine.ResidentLimitBytes == 0 ? 1L << 20 : 0;
                break;
            case "CreateRegion":
                engine.CreateRegion(P).Dispose();
                break;
            case "Advise(DontNeed)":
                region.Advise(100, 5000, CramAdvice.DontNeed); // zeroes part-pages in place, discards the whole one
                break;
            case "Advise(Cold)":
                region.Advise(0, region.Length, CramAdvice.Cold);
                break;
            case "Advise(WillNeed)":
                region.Advise(0, region.Length, CramAdvice.WillNeed);
                break;
            case "ReadFrom":
                region.ReadFrom(new MemoryStream(s_source), 0, s_source.Length);
                break;
            case "ReadFromAsync":
                region.ReadFromAsync(new MemoryStream(s_source), 0, s_source.Length).AsTask().GetAwaiter().GetResult();
                break;
            case "WriteTo":
                region.WriteTo(new MemoryStream(s_source.Length), 0, s_source.Length); // reads every byte of the region
                break;
            case "WriteToAsync":
                region.WriteToAsync(new MemoryStream(s_source.Length), 0, s_source.Length).AsTask().GetAwaiter().GetResult();
                break;
            case "AsSpan": // creating a span or memory only: using either after Dispose is the caller's bug, as with any native memory
                _ = region.AsSpan<byte>(0, P).Length;
                break;
            case "AsMemory":
                _ = region.AsMemory<byte>(0, P).Length;
                break;
            default:
                region.MakeResident(0, 64 * P, forWrite: true);
                break;
        }
    }

    [Theory]
    [MemberData(nameof(Members))]
    public void ACallRacingDispose_CompletesOrThrowsObjectDisposed(string member)
    {
        bool engineMember = member is "GetStats" or "CompactPool" or "ResidentLimitBytes" or "CreateRegion";
        foreach (bool disposeEngine in engineMember ? [true] : new[] { false, true }) // an engine member outlives a region's dispose
        {
            for (int round = 0; round < Rounds; round++)
            {
                var engine = CramEngine.Create(new CramOptions { FaultAroundPages = 1 });
                CramRegion region = engine.CreateRegion(64 * P);
                for (int i = 0; i < 64; i++)
                {
                    TestPages.WriteCompressible(region.Pointer + (long)i * P, i, 1);
                }
                Exception? unexpected = null;
                int calls = 0;
                using var started = new ManualResetEventSlim();
                var caller = new Thread(() =>
                {
                    try
                    {
                        while (true)
                        {
                            Call(engine, region, member);
                            if (Interlocked.Increment(ref calls) == 1)
                            {
                                started.Set();
                            }
                        }
                    }
                    catch (ObjectDisposedException)
                    {
                        // what a call after (or during) the dispose gets
                    }
                    catch (Exception e)
                    {
                        unexpected = e;
                    }
                    finally
                    {
                        started.Set();
                    }
                });
                caller.Start();
                Assert.True(started.Wait(TimeSpan.FromSeconds(20)));
                if (disposeEngine)
                {
                    engine.Dispose();
                }
                else
                {
                    region.Dispose();
                }
                Assert.True(caller.Join(TimeSpan.FromSeconds(20)), $"{member}: the caller did not stop after the dispose");
                Assert.Null(unexpected);
                Assert.True(calls > 0);
                engine.Dispose();
            }
        }
    }
}
