namespace CramCore.Tests;

[Trait("Category", TestCategory.Unit)]
public sealed unsafe class ChecksumAndDirectoryTests
{
    [Fact]
    public void Crc32C_MatchesTheStandardCheckValue_AndTheNativeService()
    {
        byte[] check = "123456789"u8.ToArray();
        fixed (byte* p = check)
        {
            Assert.Equal(0xE3069283u, Checksum.Crc32C(p, check.Length)); // the CRC-32C check value
        }
        var random = new Random(5);
        foreach (int length in new[] { 0, 1, 7, 8, 9, 63, 1000, 4095, 4096 })
        {
            byte[] data = new byte[length];
            random.NextBytes(data);
            fixed (byte* p = data)
            {
                uint native;
                Assert.Equal(0, Interop.CramNative.Checksum(p, (uint)length, &native));
                Assert.Equal(native, Checksum.Crc32C(p, length));
            }
        }
    }

    [Fact]
    public void Directory_HandsOutLowestIdsFirst_AndFreesAClusterWithItsLastId()
    {
        using var directory = new ClusteredDirectory<NativeSlot>("test table");
        int perCluster = SharedLayout.DirectoryClusterSize;
        var ids = new List<ulong>();
        for (int i = 0; i < perCluster + 10; i++)
        {
            ids.Add(directory.Allocate());
        }
        Assert.Equal(1UL, ids[0]); // id 0 is never handed out
        Assert.Equal((ulong)(perCluster + 10), ids[^1]);
        long twoClusters = directory.MetadataBytes;
        // Free the second cluster's ids: its memory goes.
        foreach (ulong id in ids.Where(id => id >= (ulong)perCluster))
        {
            directory.Free(id);
        }
        Assert.True(directory.MetadataBytes < twoClusters, $"{directory.MetadataBytes} of {twoClusters}");
        Assert.True(directory.TryGet((ulong)perCluster) == null);
        // Only the pages of records ever handed out count: one cluster, full, is 16 bytes per id.
        Assert.Equal(perCluster * sizeof(NativeSlot) + SharedLayout.PageSize, directory.MetadataBytes);
        // Freed low ids are reused before higher ones.
        directory.Free(5);
        directory.Free(3);
        Assert.Equal(3UL, directory.Allocate());
        Assert.Equal(5UL, directory.Allocate());
        Assert.Equal((ulong)perCluster, directory.Allocate());
        Assert.Throws<InvalidOperationException>(() => directory.Free(999_999));
        Assert.Throws<InvalidOperationException>(() => directory.Free(0));
    }

    [Fact]
    public void Slot_Is16Bytes()
    {
        Assert.Equal(16, sizeof(NativeSlot));
    }
}
