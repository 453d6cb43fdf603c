using K4os.Compression.LZ4;

namespace CramCore.Tests;

/// <summary>
/// What the engine stores is plain LZ4 block format: an independent implementation
/// (K4os.Compression.LZ4, a managed port; the engine itself uses the system liblz4) decodes every
/// stored copy back to the page that was written.
/// </summary>
[Trait("Category", TestCategory.Userfaultfd)]
public sealed unsafe class IndependentLz4Tests
{
    private const int P = 4096;

    [Theory]
    [InlineData("dotnet-heap")]
    [InlineData("python-heap")]
    [InlineData("text")]
    [InlineData("elf-binaries")]
    public void StoredCopies_DecodeWithAnIndependentLz4(string sample)
    {
        byte[] pages = File.ReadAllBytes(Path.Combine(AppContext.BaseDirectory, "Samples", sample + ".sample.pages"));
        int count = pages.Length / P;
        using var engine = CramEngine.Create();
        using var region = engine.CreateRegion((long)count * P);
        pages.CopyTo(new Span<byte>(region.Pointer, pages.Length));
        region.Reclaim(region.Length);

        var decoded = new byte[P];
        int checkedLz4 = 0;
        for (int i = 0; i < count; i++)
        {
            ulong pte = PageTableEntry.Load(region.PageTableEntries + i);
            if (PageTableEntry.State(pte) != PageState.Evicted || PageTableEntry.Slot(pte) == 0)
            {
                continue; // same-filled (slot 0) or kept resident: nothing stored in LZ4
            }
            NativeSlot* slot = engine.Parts.Slots.Get(PageTableEntry.Slot(pte));
            if (slot->Backend != SlotBackend.Pool || (NativeSlot.LoadFlags(slot) & SlotFlags.Raw) != 0)
            {
                continue;
            }
            var stored = new ReadOnlySpan<byte>((byte*)engine.Parts.Pool.AddressOf((uint)slot->Location), slot->Length);
            Array.Clear(decoded);
            Assert.Equal(P, LZ4Codec.Decode(stored, decoded));
            Assert.True(decoded.AsSpan().SequenceEqual(pages.AsSpan(i * P, P)), $"{sample} page {i}");
            checkedLz4++;
        }
        Assert.True(checkedLz4 > 0, $"{sample}: no page was stored as LZ4");
        Assert.True(pages.AsSpan().SequenceEqual(new ReadOnlySpan<byte>(region.Pointer, pages.Length))); // and they swap back in
    }
}
