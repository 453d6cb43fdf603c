namespace CramCore.Cli.Commands;

/// <summary>What `cram estimate --calibrate --json` prints: the fitted model, to paste into PageEstimator.cs, and its agreement per file.</summary>
internal sealed record CalibrationResult(string Files, string Coefficients, int IncompressibleMargin, int CompressibleMargin, Dictionary<string, double> FitAgreement);

/// <summary>
/// `cram estimate --calibrate`: fits the estimator's size model (least squares over the sampled
/// features, every file weighted equally) and the smallest margins that keep wrong confident
/// answers within 0.5 % (incompressible) and 1 % (compressible) of every file. Kept apart from
/// the measurement in <see cref="EstimateCommand"/>, which supplies the measured pages.
/// </summary>
internal static class EstimatorCalibration
{
    private const int PageSize = PageSource.PageSize;

    /// <summary>Fits the size model (least squares, every file weighted equally) and the margins, and reports the fit.</summary>
    public static int Run(List<EstimateCommand.Input> inputs, EstimateCommand.Settings s)
    {
        const int K = PageEstimator.FeatureCount;
        var ata = new double[K, K];
        var atb = new double[K];
        foreach (EstimateCommand.Input input in inputs)
        {
            double weight = 1.0 / input.Pages;
            for (int i = 0; i < input.Pages; i++)
            {
                if (input.Estimates[i].Class <= PageClass.SameFilled)
                {
                    continue; // exact, not modelled
                }
                double[] x = Features(input.Samples[i]);
                for (int a = 0; a < K; a++)
                {
                    atb[a] += weight * x[a] * input.Lz4Sizes[i];
                    for (int b = 0; b < K; b++)
                    {
                        ata[a, b] += weight * x[a] * x[b];
                    }
                }
            }
        }
        double[] k = Solve(ata, atb);
        int Size(EstimateCommand.Input input, int i)
        {
            double[] x = Features(input.Samples[i]);
            double size = 0;
            for (int a = 0; a < K; a++)
            {
                size += k[a] * x[a];
            }
            return (int)Math.Clamp(size, 0, 2 * PageSize);
        }
        int t = s.Threshold;
        // The smallest margins (from the floor, in steps of 25 bytes) that keep wrong confident answers within bounds in every file.
        int incompressibleMargin = SmallestMargin(m => inputs.All(input => Rate(input, i =>
            input.Estimates[i].Class > PageClass.SameFilled && Size(input, i) > t + m
            && input.Estimates[i].NibbleEntropy >= PageEstimator.MinIncompressibleEntropy && input.Lz4Sizes[i] <= t) <= 0.005));
        int compressibleMargin = SmallestMargin(m => inputs.All(input => Rate(input, i =>
            input.Estimates[i].Class > PageClass.SameFilled && Size(input, i) < t - m && input.Lz4Sizes[i] > t) <= 0.01));
        var result = new CalibrationResult(
            Files: string.Join(", ", inputs.Select(i => i.Name)),
            Coefficients: "[" + string.Join(", ", k.Select(c => c.ToString("0.###", System.Globalization.CultureInfo.InvariantCulture) + "f")) + "]",
            IncompressibleMargin: incompressibleMargin,
            CompressibleMargin: compressibleMargin,
            FitAgreement: inputs.ToDictionary(input => input.Name, input => Math.Round(Rate(input, i =>
                input.Estimates[i].Class <= PageClass.SameFilled || (Size(input, i) <= t) == (input.Lz4Sizes[i] <= t)), 4)));
        return ResultPrinter.Print(result, s.Json, "cram estimate --calibrate (paste into PageEstimator.cs)");
    }

    private static double Rate(EstimateCommand.Input input, Func<int, bool> predicate)
    {
        int count = 0;
        for (int i = 0; i < input.Pages; i++)
        {
            count += predicate(i) ? 1 : 0;
        }
        return (double)count / input.Pages;
    }

    private static int SmallestMargin(Func<int, bool> acceptable)
    {
        for (int m = PageEstimator.MarginFloor; m <= 2 * PageSize; m += 25)
        {
            if (acceptable(m))
            {
                return m;
            }
        }
        return 2 * PageSize;
    }

    private static double[] Features(PageSample sample)
    {
        Span<float> x = stackalloc float[PageEstimator.FeatureCount];
        PageEstimator.Features(sample, x);
        double[] result = new double[x.Length];
        for (int i = 0; i < x.Length; i++)
        {
            result[i] = x[i];
        }
        return result;
    }

    /// <summary>Gaussian elimination with partial pivoting.</summary>
    private static double[] Solve(double[,] a, double[] b)
    {
        int n = b.Length;
        for (int col = 0; col < n; col++)
        {
            int pivot = col;
            for (int r = col + 1; r < n; r++)
            {
                if (Math.Abs(a[r, col]) > Math.Abs(a[pivot, col]))
                {
                    pivot = r;
                }
            }
            for (int c = 0; c < n; c++)
            {
                (a[col, c], a[pivot, c]) = (a[pivot, c], a[col, c]);
            }
            (b[col], b[pivot]) = (b[pivot], b[col]);
            for (int r = 0; r < n; r++)
            {
                if (r != col && a[col, col] != 0)
                {
                    double f = a[r, col] / a[col, col];
                    for (int c = col; c < n; c++)
                    {
                        a[r, c] -= f * a[col, c];
                    }
                    b[r] -= f * b[col];
                }
            }
        }
        var x = new double[n];
        for (int i = 0; i < n; i++)
        {
            x[i] = a[i, i] == 0 ? 0 : b[i] / a[i, i];
        }
        return x;
    }
}
